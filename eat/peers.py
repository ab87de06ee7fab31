"""Peers measured in the same harness: the static model a user would deploy, from the same fine-tuned weights.

`HFStatic` builds `AutoModelForSequenceClassification` (sdpa attention) from the backbone's config and
copies our trained weights into it, so `peer=hf_static` times exactly what a user would otherwise deploy.
`peer=hf_int8` adds torch dynamic INT8; `peer=ort_fp32` / `ort_int8` export that HF model to ONNX Runtime;
`peer=ort_int8_opt` runs ORT's transformer optimizer on the export before quantizing it (fused attention,
embedding and skip LayerNorms), as a user chasing the last few per cent of a BERT on ORT would.
`peer=truncated` is our static model of a checkpoint trained with `model.keep_layers=k` (the first k layers).
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import torch
from torch import Tensor, nn

from eat import flops
from eat.config import RuntimeConfig
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


def hf_model(ours: Encoder, attn: str = "sdpa") -> nn.Module:
    """`AutoModelForSequenceClassification` of our encoder's shape holding its trained weights (the static model:
    the mechanisms' weights, e.g. exit heads, are not HF's and stay behind)."""
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_config(hf_config(ours.c), attn_implementation=attn)
    ours_sd = ours.state_dict()
    hf_sd = hf.state_dict()
    for key in hf_sd:  # our name for each HF weight, by the same mapping used to load checkpoints
        mapped = map_hf_state_dict({key: hf_sd[key]}, ours.c.arch)
        if mapped:
            hf_sd[key] = ours_sd[next(iter(mapped))]
    hf.load_state_dict(hf_sd)
    return hf


class HFStatic(nn.Module):
    def __init__(self, ours: Encoder, attn: str = "sdpa"):
        super().__init__()
        if ours.mechanisms:
            raise ValueError("peer=hf_static compares against the static model: use mechanism=none")
        self.hf = hf_model(ours, attn)
        self.c = ours.c
        self.mechanisms = nn.ModuleDict()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None and self.c.type_vocab_size else {}
        logits = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw).logits
        return static_outputs(self.c, logits, attention_mask)


def static_outputs(c: EncoderConfig, logits: Tensor, attention_mask: Tensor) -> Outputs:
    """The per-row bookkeeping of a static model: every row runs every layer on every token."""
    B, L = attention_mask.shape
    dev = logits.device
    static = torch.full((B,), flops.static_flops_per_row(L, c.num_layers, c.hidden_size, c.intermediate_size,
                                                          c.num_labels), dtype=torch.float64, device=dev)
    n = attention_mask.sum(1)
    return Outputs(logits=logits, exit_layer=torch.full((B,), c.num_layers, device=dev), tokens_in=n,
                   tokens_kept=n[:, None].expand(B, c.num_layers).clone(), flops=static, static_flops=static.clone())


class HFInt8(HFStatic):
    """peer=hf_int8: the HF model with torch dynamic INT8 on every nn.Linear (the one line a user adds)."""

    def __init__(self, ours: Encoder, per_channel: bool = True):
        super().__init__(ours)
        from eat.runtimes import quantize_int8

        self.hf.eval()
        quantize_int8(self.hf, per_channel)


class _HFLogits(nn.Module):
    def __init__(self, hf: nn.Module, with_token_types: bool):
        super().__init__()
        self.hf, self.with_token_types = hf, with_token_types

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        kw = {"token_type_ids": token_type_ids} if self.with_token_types else {}
        return self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw).logits


class OrtStatic(nn.Module):
    """peer=ort_fp32 / ort_int8: the HF model exported to ONNX (`torch.onnx.export`, dynamic batch and length)
    and run by ONNX Runtime's CPU provider; int8: ORT dynamic quantization (QInt8 weights). Threads as
    torch's, spinning off (eat.runtimes.session_options). optimize: ORT's transformer optimizer first
    (`onnxruntime.transformers.optimizer`, model_type bert); it recognises the eager attention's export, not
    sdpa's, so that export uses attn_implementation="eager" (same logits)."""

    def __init__(self, ours: Encoder, int8: bool, opset: int = 17, per_channel: bool = True, optimize: bool = False):
        super().__init__()
        import tempfile

        import onnx

        from eat.runtimes import ort_session

        if ours.mechanisms:
            raise ValueError("peer=ort_* compares against the static model: use mechanism=none")
        self.c, self.mechanisms = ours.c, nn.ModuleDict()
        self.with_tt = bool(ours.c.type_vocab_size)
        with tempfile.TemporaryDirectory(prefix="eat-ort-") as folder:  # a temporary folder, never the repository
            path = hf_onnx_file(ours, folder, opset, optimize, int8, per_channel)
            self.op_types = Counter(n.op_type for n in onnx.load(path).graph.node)  # what the session runs
            self.session = ort_session(path)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Outputs:
        feed = {"input_ids": input_ids.long().contiguous().numpy(),
                "attention_mask": attention_mask.long().contiguous().numpy()}
        if self.with_tt:
            tt = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            feed["token_type_ids"] = tt.long().contiguous().numpy()
        (logits,) = self.session.run(None, feed)
        return static_outputs(self.c, torch.from_numpy(logits), attention_mask)


def optimized_file(path: str, num_heads: int, hidden_size: int) -> str:
    """ORT's BERT graph fusions (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) applied to
    the ONNX file at `path`, written next to it; returns the new file's path. ORT's quantizer then turns the fused
    Attention into QAttention."""
    from onnxruntime.transformers.optimizer import optimize_model

    out = path.replace(".onnx", ".opt.onnx")
    optimize_model(path, model_type="bert", num_heads=num_heads, hidden_size=hidden_size).save_model_to_file(out)
    return out


def hf_onnx_file(ours: Encoder, folder: str, opset: int, optimize: bool, int8: bool, per_channel: bool = True,
                 weights: str = "s8", fp32_heads: bool = False, fp32_ops=()) -> str:
    """Our encoder's static model as a user deploys it on ONNX Runtime, written into `folder`: the HF model (its
    trained weights, `hf_model`) exported by `torch.onnx.export` with dynamic batch and length (inputs input_ids,
    attention_mask and, if the model has token types, token_type_ids; output logits), then with `optimize` ORT's
    transformer optimizer, then with `int8` ORT's dynamic quantization (`weights`, `fp32_ops`: eat.runtimes.ort_int8_file;
    `fp32_heads`: the pooler and classifier stay fp32). Returns the final file's path. Shared by the ORT peers and runtime.graph=optimized (eat/optimized_graph.py)."""
    from eat.runtimes import ort_int8_file, quiet_export

    hf = hf_model(ours, attn="eager" if optimize else "sdpa").eval()
    with_tt = bool(ours.c.type_vocab_size)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_tt else [])
    ids = torch.full((2, 5), 5, dtype=torch.long)
    args = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if with_tt else ())
    path = f"{folder}/model.onnx"
    with quiet_export(), torch.no_grad():
        torch.onnx.export(_HFLogits(hf, with_tt), args, path, input_names=names, output_names=["logits"],
                          dynamic_axes={**{n: {0: "b", 1: "l"} for n in names}, "logits": {0: "b"}},
                          opset_version=opset, dynamo=False)
        if optimize:
            path = optimized_file(path, ours.c.num_heads, ours.c.hidden_size)
        if int8:
            path = ort_int8_file(path, per_channel, weights=weights, fp32_ops=fp32_ops,
                                 only_under="/hf/bert/encoder/" if fp32_heads else "")
    return path


def build_peer(name: str, ours: Encoder, rt: Optional[RuntimeConfig] = None) -> nn.Module:
    """The peer module for `peer=name`, from our loaded encoder (truncated: our own static model as is).
    `rt`: the run's runtime settings that peers share with EAT's runtimes (INT8 weight scales, ONNX opset)."""
    rt = rt or RuntimeConfig()
    if ours.mechanisms:
        raise ValueError(f"peer={name} compares against the static model: use mechanism=none")
    if name == "hf_static":
        peer = HFStatic(ours)
    elif name == "hf_int8":
        peer = HFInt8(ours, rt.per_channel)
    elif name in ("ort_fp32", "ort_int8", "ort_int8_opt"):
        peer = OrtStatic(ours, int8=name != "ort_fp32", opset=rt.opset, per_channel=rt.per_channel,
                         optimize=name == "ort_int8_opt")
    elif name == "truncated":
        peer = ours
    else:
        raise ValueError(f"peer={name!r} is not a known peer")
    return peer.eval()  # ready to call: a harness may time it without going through Lightning's test loop
