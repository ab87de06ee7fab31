"""Our encoder: embeddings -> explicit layer loop -> classification head.

It loads the weights of Hugging Face BERT, DistilBERT and RoBERTa checkpoints (see `eat.model.hub`) but
owns its layer loop, so mechanisms plug in between layers without touching HF internals.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eat import flops
from eat.model.config import EncoderConfig  # noqa: F401 (the model's shape; imported from here too)
from eat.model.kernels import MaskedAttention, dense_attention
from eat.model.mechanism import Mechanism
from eat.model.state import Outputs, State


class Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.c = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size) if c.type_vocab_size else None
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        B, L = input_ids.shape
        if self.c.arch == "roberta":  # RoBERTa counts positions from pad_id + 1, skipping padding
            real = input_ids.ne(self.c.pad_token_id).long()
            pos = real.cumsum(1) * real + self.c.pad_token_id
        else:
            pos = torch.arange(L, device=input_ids.device).expand(B, L)
        x = self.word(input_ids) + self.position(pos)  # (B, L, D)
        if self.token_type is not None:
            tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.token_type(tt)
        return self.drop(self.norm(x))


class Layer(nn.Module):
    """Post-LayerNorm transformer layer (BERT, DistilBERT and RoBERTa share it)."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        D, Fdim = c.hidden_size, c.intermediate_size
        self.H, self.attn_p = c.num_heads, c.attention_dropout
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.attn_norm = nn.LayerNorm(D, eps=c.layer_norm_eps)
        self.ffn_in, self.ffn_out = nn.Linear(D, Fdim), nn.Linear(Fdim, D)
        self.ffn_norm = nn.LayerNorm(D, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.hidden_dropout)

    def forward(self, x: Tensor, attend, need_received: bool):
        B, L, D = x.shape
        split = lambda t: t.view(B, L, self.H, D // self.H).transpose(1, 2)  # noqa: E731  (B, H, L, dh)
        p = self.attn_p if self.training else 0.0
        ctx, received, attn_flops = attend(split(self.q(x)), split(self.k(x)), split(self.v(x)), need_received, p)
        x = self.attn_norm(x + self.drop(self.o(ctx.transpose(1, 2).reshape(B, L, D))))
        x = self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))
        return x, received, attn_flops


class ClassifierHead(nn.Module):
    """The checkpoint family's head on the first token: BERT pooler (tanh) + classifier, DistilBERT
    pre_classifier (ReLU) + classifier, RoBERTa dense (tanh) + out_proj. Dropout placement differs only
    in training."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense, self.out = nn.Linear(c.hidden_size, c.hidden_size), nn.Linear(c.hidden_size, c.num_labels)
        self.act = nn.ReLU() if c.arch == "distilbert" else nn.Tanh()
        self.drop = nn.Dropout(c.hidden_dropout)

    def forward(self, first_token: Tensor) -> Tensor:  # (B, D) -> (B, C)
        return self.out(self.drop(self.act(self.dense(first_token))))


class Encoder(nn.Module):
    def __init__(self, c: EncoderConfig, mechanisms: Optional[Dict[str, Mechanism]] = None):
        super().__init__()
        self.c = c
        self.embed = Embeddings(c)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_layers))
        self.head = ClassifierHead(c)
        self.mechanisms = nn.ModuleDict(mechanisms or {})  # consulted in insertion order
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def protected_tokens(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """[CLS] always; every [SEP] too when the row is a sentence pair (two or more [SEP]). Pruning keeps
        them, and they mark the segments (eat.model.tokens.second_segment)."""
        prot = torch.zeros_like(mask)
        prot[:, 0] = True
        sep = input_ids.eq(self.c.sep_token_id) & mask
        return prot | (sep & (sep.sum(1, keepdim=True) >= 2))

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        B, L = input_ids.shape
        c, dev = self.c, input_ids.device
        mask = attention_mask.bool()
        hidden = self.embed(input_ids, token_type_ids)  # (B, L, D)
        out = Outputs(
            logits=torch.zeros(B, c.num_labels, device=dev, dtype=hidden.dtype),
            exit_layer=torch.full((B,), c.num_layers, dtype=torch.long, device=dev),
            tokens_in=mask.sum(1),
            tokens_kept=torch.zeros(B, c.num_layers, dtype=torch.long, device=dev),
            flops=torch.zeros(B, dtype=torch.float64, device=dev),
            static_flops=torch.full((B,), flops.static_flops_per_row(
                L, c.num_layers, c.hidden_size, c.intermediate_size, c.num_labels), dtype=torch.float64, device=dev),
        )
        state = State(hidden, mask, torch.arange(B, device=dev), self.protected_tokens(input_ids, mask), out)

        mechanisms = list(self.mechanisms.values())
        for i, layer in enumerate(self.layers):
            live = state.mask  # (B', L') tokens in flight in this layer
            attend = next((a for m in mechanisms if (a := m.attention(i, state)) is not None), None) or \
                MaskedAttention(lambda q, k, v, need, p: dense_attention(q, k, v, live, need, p),
                                lambda: live[:, None, None, :], live)
            need = any(m.wants_received_attention(i) for m in mechanisms)
            # a fused runtime's layer also returns the mechanisms' readouts it computed inside its graph
            state.hidden, state.received, attn_flops, *fused = layer(state.hidden, attend, need)
            state.readouts = fused[0] if fused else {}
            layer_flops = flops.layer_linear_flops(state.length, c.hidden_size, c.intermediate_size) + attn_flops
            if state.batch == B:  # no row has left, rows are 0..B-1: plain slices (indexed writes cost ~10 us each)
                out.tokens_kept[:, i] = state.mask.sum(1)
                out.flops += layer_flops
            else:
                out.tokens_kept[state.rows, i] = state.mask.sum(1)
                out.flops[state.rows] += layer_flops
            for m in mechanisms:
                state = m.after_layer(i, state)
                if state.batch == 0:
                    return out  # every row has exited
        out.logits[state.rows] = self.head(state.hidden[:, 0]).to(out.logits.dtype)
        out.flops[state.rows] += flops.final_head_flops(c.hidden_size, c.num_labels)
        return out
