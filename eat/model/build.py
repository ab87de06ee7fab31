"""Model construction: tokenizer + our encoder (+ mechanisms), from a ModelConfig."""
from __future__ import annotations

import dataclasses

from eat.config import ConfigError, MechanismConfig, ModelConfig
from eat.mechanisms import build_mechanisms
from eat.model.encoder import Encoder, EncoderConfig
from eat.model.hub import encoder_config, load_hf_weights, read_weights, resolve_checkpoint


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.pretrained
    return AutoTokenizer.from_pretrained(resolve_checkpoint(source), use_fast=True)


def keep_layers(c: EncoderConfig, cfg: ModelConfig) -> EncoderConfig:
    """`model.keep_layers=k`: the first k layers of the backbone (the loader then ignores the weights of the
    rest), so a plain fine-tune of it is the smaller static model at matched cost (peer=truncated)."""
    k = cfg.keep_layers
    if k is None:
        return c
    if k > c.num_layers:
        raise ConfigError(f"model.keep_layers={k} is not valid: the model has {c.num_layers} layers")
    return dataclasses.replace(c, num_layers=k)


def build_encoder(cfg: ModelConfig, mechanism: MechanismConfig, num_labels: int, tokenizer) -> Encoder:
    if cfg.pretrained is not None:
        folder = resolve_checkpoint(cfg.pretrained)
        c = encoder_config(folder, num_labels, tokenizer)
    else:
        c = EncoderConfig(arch=cfg.arch, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                          num_layers=cfg.num_layers, num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                          max_position_embeddings=cfg.max_position_embeddings,
                          type_vocab_size=0 if cfg.arch == "distilbert" else (1 if cfg.arch == "roberta" else 2),
                          pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id,
                          hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout, num_labels=num_labels)
    c = keep_layers(c, cfg)
    model = Encoder(c, build_mechanisms(mechanism, c))
    if cfg.pretrained is not None:
        load_hf_weights(model, read_weights(folder, cfg.sha256))
    return model



