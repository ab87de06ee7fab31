"""Peers measured in the same harness: the Hugging Face static model, from the same fine-tuned weights.

`HFStatic` builds `AutoModelForSequenceClassification` (sdpa attention) from the backbone's config and
copies our trained weights into it, so `peer=hf_static` times exactly what a user would otherwise deploy.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from eat import flops
from eat.model.encoder import Encoder, EncoderConfig
from eat.model.hub import map_hf_state_dict
from eat.model.state import Outputs


def hf_config(c: EncoderConfig):
    """The HF config of the same shape as our EncoderConfig."""
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if c.arch == "distilbert":
        return DistilBertConfig(vocab_size=c.vocab_size, dim=c.hidden_size, n_layers=c.num_layers, n_heads=c.num_heads,
                                hidden_dim=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
                                pad_token_id=c.pad_token_id, num_labels=c.num_labels)
    cls = RobertaConfig if c.arch == "roberta" else BertConfig
    return cls(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
               num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size,
               max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
               layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id, num_labels=c.num_labels)


class HFStatic(nn.Module):
    def __init__(self, ours: Encoder):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        if ours.mechanisms:
            raise ValueError("peer=hf_static compares against the static model: use mechanism=none")
        self.hf = AutoModelForSequenceClassification.from_config(hf_config(ours.c), attn_implementation="sdpa")
        ours_sd = ours.state_dict()
        hf_sd = self.hf.state_dict()
        for key in hf_sd:  # our name for each HF weight, by the same mapping used to load checkpoints
            mapped = map_hf_state_dict({key: hf_sd[key]}, ours.c.arch)
            if mapped:
                hf_sd[key] = ours_sd[next(iter(mapped))]
        self.hf.load_state_dict(hf_sd)
        self.c = ours.c
        self.mechanisms = nn.ModuleDict()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        B, L = input_ids.shape
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None and self.c.type_vocab_size else {}
        logits = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw).logits
        c, dev = self.c, input_ids.device
        static = torch.full((B,), flops.static_flops_per_row(L, c.num_layers, c.hidden_size, c.intermediate_size,
                                                              c.num_labels), dtype=torch.float64, device=dev)
        n = attention_mask.sum(1)
        return Outputs(logits=logits, exit_layer=torch.full((B,), c.num_layers, device=dev), tokens_in=n,
                       tokens_kept=n[:, None].expand(B, c.num_layers).clone(), flops=static, static_flops=static.clone())
