"""The model's shape, defined once: `EncoderConfig`, built from the Hydra model config or from a HF config.json.

`Shape` holds the fields a user may set for a randomly initialised model (model=tiny); the Hydra schema
`eat.config.ModelConfig` extends it with where the weights come from, and `EncoderConfig` with what the weights
and the tokenizer decide (token types, padding and [SEP] ids, number of labels). No torch here: the config
schemas import it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional

from eat.checks import CheckpointError, ConfigError


@dataclass
class Shape:
    arch: str = "bert"  # bert | distilbert | roberta: embeddings and classification head differ
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512


@dataclass
class EncoderConfig(Shape):
    type_vocab_size: int = 2  # 0: no token types (DistilBERT)
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    sep_token_id: int = 102
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    num_labels: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_model(cls, m, num_labels: int, tokenizer=None) -> "EncoderConfig":
        """From the Hydra model config `m` (eat.config.ModelConfig): the pretrained checkpoint's config.json when
        `m.pretrained` is set, else `m`'s own shape fields; then `m.keep_layers` (the first k layers only)."""
        if m.pretrained is not None:
            from eat.model.hub import resolve_checkpoint

            c = cls.from_hf(resolve_checkpoint(m.pretrained), num_labels, tokenizer)
        else:
            shape = {f.name: getattr(m, f.name) for f in dataclasses.fields(Shape)}
            c = cls(**shape, type_vocab_size={"distilbert": 0, "roberta": 1}.get(m.arch, 2),
                    hidden_dropout=m.dropout, attention_dropout=m.dropout, num_labels=num_labels)
            if tokenizer is not None:
                c.pad_token_id, c.sep_token_id = tokenizer.pad_token_id, tokenizer.sep_token_id
        if m.keep_layers is not None:
            # the first k layers of the backbone (the loader then ignores the weights of the rest), so a plain
            # fine-tune of it is the smaller static model at matched cost (peer=truncated)
            if m.keep_layers > c.num_layers:
                raise ConfigError(f"model.keep_layers={m.keep_layers} is not valid: the model has {c.num_layers} layers")
            c = dataclasses.replace(c, num_layers=m.keep_layers)
        return c

    @classmethod
    def from_hf(cls, folder: str, num_labels: int, tokenizer=None) -> "EncoderConfig":
        """From the config.json of a HF BERT / DistilBERT / RoBERTa checkpoint folder."""
        with open(os.path.join(folder, "config.json")) as f:
            hf = json.load(f)
        kind = hf.get("model_type", "bert")
        if kind == "distilbert":
            c = cls(arch="distilbert", vocab_size=hf["vocab_size"], hidden_size=hf["dim"], num_layers=hf["n_layers"],
                    num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
                    max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=0, layer_norm_eps=1e-12,
                    pad_token_id=hf.get("pad_token_id", 0), hidden_dropout=hf.get("dropout", 0.1),
                    attention_dropout=hf.get("attention_dropout", 0.1))
        elif kind in ("bert", "roberta"):
            c = cls(arch=kind, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                    num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                    intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
                    type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    pad_token_id=hf.get("pad_token_id", 0 if kind == "bert" else 1),
                    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1))
        else:
            raise CheckpointError(f"{folder}/config.json: model_type {kind!r} is not supported "
                                  "(supported: bert, distilbert, roberta)")
        c.num_labels = num_labels
        sep: Optional[int] = getattr(tokenizer, "sep_token_id", None)
        if sep is not None:
            c.sep_token_id = sep
        elif kind == "roberta":
            c.sep_token_id = 2
        return c
