"""Progressive token pruning: after chosen layers keep each row's most important tokens.

mode=compute gathers the kept tokens, so the sequence really gets shorter (re-padded to the batch's new
longest row). mode=mask reproduces the reference: pruned tokens are zeroed and masked, the length stays.
The number kept depends only on the row's own real length, so a row is pruned the same way at any
batch size. Importance criteria are the registry eat.model.tokens.TOKEN_SCORES.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch

from eat.model.config import EncoderConfig
from eat.model.mechanism import Mechanism, register, scaled_layers
from eat.model.state import State
from eat.model.tokens import TOKEN_SCORES, check_schedule, kept_tokens


@dataclass
class PruneConfig:
    # Prune after these layers (1-based), written for a 6-layer encoder and rescaled to the model's
    # depth (the paper's "after layers 2 and 4" of 6; layers 4 and 8 of a 12-layer BERT).
    layers: List[int] = field(default_factory=lambda: [2, 4])
    keep_ratios: List[float] = field(default_factory=lambda: [0.7, 0.7])
    criterion: str = "attention"  # attention (received, PoWER-BERT) | norm (hidden-state L2, the paper)
    reference_depth: int = 6
    # Sentence pairs: the keep ratio applies within each segment (neither sentence can lose all its tokens) and
    # every [SEP] is kept. false: one ratio over the whole pair, only [CLS] and the first [SEP] kept (earlier
    # behaviour, for the ablation). Single sentences are pruned the same either way.
    segments: bool = True

    def __post_init__(self) -> None:
        check_schedule("mechanism.prune", self)


@register("prune", PruneConfig, order=30, spelling=10)
class TokenPruner(Mechanism):
    def __init__(self, cfg: PruneConfig, num_layers: int, zero_mask: bool = False):
        super().__init__()
        self.cfg, self.zero_mask = cfg, zero_mask
        layers = scaled_layers(cfg.layers, cfg.reference_depth, num_layers, "mechanism.prune.layers")
        self.keep: Dict[int, float] = dict(zip(layers, cfg.keep_ratios))

    @classmethod
    def build(cls, cfg: PruneConfig, c: EncoderConfig, reference: bool) -> "TokenPruner":
        return cls(cfg, c.num_layers, zero_mask=reference)

    def wants_received_attention(self, layer: int) -> bool:
        return TOKEN_SCORES[self.cfg.criterion].needs_received and layer in self.keep

    def after_layer(self, layer: int, state: State) -> State:
        if layer not in self.keep:
            return state
        index, real = kept_tokens(state, self.cfg.criterion, self.keep[layer], self.cfg.segments)
        if self.zero_mask:
            keep = torch.zeros_like(state.mask).scatter(1, index, real)
            state.hidden = state.hidden * keep[..., None].to(state.hidden.dtype)
            state.mask, state.protected = state.mask & keep, state.protected & keep
            return state
        return state.select_tokens(index, real)
