"""Progressive token pruning: after chosen layers keep each row's most important tokens.

mode=compute gathers the kept tokens, so the sequence really gets shorter (re-padded to the batch's new
longest row). mode=mask reproduces the reference: pruned tokens are zeroed and masked, the length stays.
The number kept depends only on the row's own real length, so a row is pruned the same way at any
batch size.
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from eat.config import ConfigError, PruneConfig
from eat.mechanisms.attention import second_segment
from eat.mechanisms.base import Mechanism
from eat.model.state import State


def scaled_layers(layers, reference_depth: int, num_layers: int, key: str) -> list:
    """Map 1-based layer indices written for `reference_depth` layers onto a `num_layers` model (0-based)."""
    out = [max(1, round(i * num_layers / reference_depth)) - 1 for i in layers]
    if len(set(out)) != len(out) or max(out) >= num_layers - 1:
        raise ConfigError(f"{key}={list(layers)} (for {reference_depth} layers) maps to layers "
                          f"{[i + 1 for i in out]} of this {num_layers}-layer model; they must be distinct "
                          f"and before the last layer")
    return out


def _ceil(ratio: float, n: Tensor) -> Tensor:
    """ceil(ratio * n) without float noise: a ratio of 1.0 keeps every token."""
    return torch.ceil(ratio * n.double() - 1e-6).long()


class TokenPruner(Mechanism):
    def __init__(self, cfg: PruneConfig, num_layers: int, zero_mask: bool = False):
        super().__init__()
        self.cfg, self.zero_mask = cfg, zero_mask
        layers = scaled_layers(cfg.layers, cfg.reference_depth, num_layers, "mechanism.prune.layers")
        self.keep: Dict[int, float] = dict(zip(layers, cfg.keep_ratios))

    def wants_received_attention(self, layer: int) -> bool:
        return self.cfg.criterion == "attention" and layer in self.keep

    def after_layer(self, layer: int, state: State) -> State:
        if layer not in self.keep:
            return state
        mask, L, ratio = state.mask, state.length, self.keep[layer]
        protected = state.protected
        if not self.cfg.segments:  # earlier behaviour: [CLS] and a pair's first [SEP] only
            protected = protected & (protected.long().cumsum(1) <= 2)
        scores = state.received if self.cfg.criterion == "attention" else state.hidden.norm(dim=-1)  # (B', L')
        scores = scores.float().masked_fill(~mask, -math.inf).masked_fill(protected, math.inf)
        second = second_segment(state.protected) & mask if self.cfg.segments else None
        if second is not None and bool(second.any()):  # sentence pairs: the ratio within each segment
            keep = self._keep_per_segment(scores, mask & ~second, ratio, protected) | \
                self._keep_per_segment(scores, second, ratio, protected)  # (B', L')
            n_keep = keep.sum(1)
            L_new = int(n_keep.max())
            pos = torch.arange(L, device=mask.device).expand_as(mask)
            order = torch.where(keep, pos, pos + L).sort(dim=1).values[:, :L_new]  # kept tokens first, in order
            real_slot = torch.arange(L_new, device=mask.device)[None, :] < n_keep[:, None]
        else:
            n_real = mask.sum(1)
            n_keep = torch.maximum(_ceil(ratio, n_real), protected.sum(1)).clamp(max=L)
            L_new = int(n_keep.max())
            top = scores.topk(L_new, dim=1).indices  # (B', L_new), best first
            real_slot = torch.arange(L_new, device=mask.device)[None, :] < n_keep[:, None]
            # Back to original token order; the padding slots sort to the end.
            order = torch.where(real_slot, top, top + L).sort(dim=1).values
        index = torch.where(order >= L, order - L, order)
        if self.zero_mask:
            keep = torch.zeros_like(mask).scatter(1, index, real_slot)
            state.hidden = state.hidden * keep[..., None].to(state.hidden.dtype)
            state.mask, state.protected = mask & keep, state.protected & keep
            return state
        return state.select_tokens(index, real_slot)

    @staticmethod
    def _keep_per_segment(scores: Tensor, segment: Tensor, ratio: float, protected: Tensor) -> Tensor:
        """(B', L') bool: the best ceil(ratio x n) real tokens of `segment` in each row (its protected ones
        included), so a segment keeps its share whatever the other one scores."""
        n_keep = torch.maximum(_ceil(ratio, segment.sum(1)), (protected & segment).sum(1))
        s = scores.masked_fill(~segment, -math.inf)
        rank = s.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (B', L') 0 = best
        return segment & (rank < n_keep[:, None])
