"""Model construction: tokenizer + our encoder (+ mechanisms), from a ModelConfig."""
from __future__ import annotations

from eat.config import MechanismConfig, ModelConfig
from eat.mechanisms import build_mechanisms
from eat.model.encoder import Encoder, EncoderConfig
from eat.model.hub import encoder_config, load_hf_weights, read_weights, resolve_checkpoint


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    source = cfg.tokenizer or cfg.pretrained
    return AutoTokenizer.from_pretrained(resolve_checkpoint(source), use_fast=True)


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
    model = Encoder(c, build_mechanisms(mechanism, c))
    if cfg.pretrained is not None:
        load_hf_weights(model, read_weights(folder, cfg.sha256))
    return model



