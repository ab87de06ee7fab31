"""Token merging (after ToMe, Bolya et al., 2023): after chosen layers each row keeps its most important tokens, as
pruning does, and every other token is averaged into the kept token it is most similar to, instead of being
discarded. The sequence shortens by the same amount as pruning at the same keep ratio (the kept set is chosen by
the same rule, eat.model.tokens.kept_tokens), but what the dropped tokens carried stays in the sum.

Each merged token remembers how many input tokens it stands for (the state's token slot "merge.size"), so a
token merged twice is the size-weighted mean of everything folded into it. Similarity is the cosine of the
hidden states. With `segments` a sentence pair merges within each sentence only. mode=mask keeps the length:
the merged values are written into the kept positions and the folded tokens are zeroed and masked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from eat.model.mechanism import register
from eat.model.state import State
from eat.model.tokens import TokenReducer, TokenSchedule, second_segment


@dataclass
class MergeConfig(TokenSchedule):  # pruning's schedule; with `segments` tokens also merge within their own sentence
    KEY: ClassVar[str] = "mechanism.merge"
    WHAT: ClassVar[str] = "merging"


@register("merge", MergeConfig, order=40, spelling=15)
class TokenMerger(TokenReducer):
    def reduce(self, state: State, index: Tensor, real: Tensor) -> State:
        B, L, D = state.hidden.shape
        kept = torch.zeros_like(state.mask).scatter(1, index, real)  # (B', L) real tokens that stay
        folded = state.mask & ~kept  # real tokens merged into a kept one
        size = state.token_slots.get("merge.size")
        size = torch.ones(B, L, dtype=state.hidden.dtype, device=state.hidden.device) if size is None else size
        if not bool(folded.any()):  # nothing to fold in: exactly pruning at this ratio
            merged, merged_size = state.hidden.gather(1, index[..., None].expand(-1, -1, D)), size.gather(1, index)
        else:
            merged, merged_size = self._merge(state, index, real, kept, folded, size)
        if self.reference:  # mode=mask: merged values in the kept positions, the folded tokens zeroed and masked
            state.hidden = torch.zeros_like(state.hidden).scatter(1, index[..., None].expand(-1, -1, D),
                                                                  merged * real[..., None].to(merged.dtype))
            state.token_slots["merge.size"] = torch.zeros_like(size).scatter(1, index, merged_size * real)
            state.mask, state.protected = state.mask & kept, state.protected & kept
            return state
        state = state.select_tokens(index, real)
        state.hidden = merged
        state.token_slots["merge.size"] = merged_size
        return state

    def _merge(self, state: State, index: Tensor, real: Tensor, kept: Tensor, folded: Tensor, size: Tensor):
        """(hidden (B', L'', D), size (B', L'')) of the kept slots after each folded token is added to its most
        similar kept token of the same segment, every token weighted by the input tokens it stands for."""
        h = state.hidden
        B, L, D = h.shape
        Lk = index.shape[1]
        kept_h = h.gather(1, index[..., None].expand(-1, -1, D))  # (B', L'', D)
        sim = F.normalize(h, dim=-1) @ F.normalize(kept_h, dim=-1).transpose(1, 2)  # (B', L, L'') cosine
        allowed = real[:, None, :].expand(B, L, Lk)
        if self.cfg.segments:  # a pair's sentences stay apart: each keeps [CLS] or a [SEP], so a target exists
            seg = second_segment(state.protected)
            allowed = allowed & (seg[:, :, None] == seg.gather(1, index)[:, None, :])
        target = sim.masked_fill(~allowed, -torch.inf).argmax(-1)  # (B', L) kept slot of each token
        own = torch.zeros_like(state.mask, dtype=torch.long).scatter(1, index, torch.arange(Lk, device=h.device).expand(B, Lk))  # kept: itself
        target = torch.where(kept, own, target)
        w = size * (kept | folded).to(size.dtype)  # (B', L) padding weighs nothing
        total = torch.zeros(B, Lk, dtype=size.dtype, device=h.device).scatter_add(1, target, w)  # (B', L'')
        summed = torch.zeros(B, Lk, D, dtype=h.dtype, device=h.device).scatter_add(
            1, target[..., None].expand(-1, -1, D), h * w[..., None])
        merged = torch.where(real[..., None], summed / total.clamp_min(1e-12)[..., None], kept_h)
        state.spend(2.0 * L * Lk * D)  # the similarity matmul (the weighted sums are elementwise)
        return merged, torch.where(real, total, size.gather(1, index))
