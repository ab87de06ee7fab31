"""Progressive token pruning: after chosen layers keep each row's most important tokens.

mode=compute gathers the kept tokens, so the sequence really gets shorter (re-padded to the batch's new
longest row). mode=mask reproduces the reference: pruned tokens are zeroed and masked, the length stays.
The number kept depends only on the row's own real length, so a row is pruned the same way at any
batch size. Importance criteria are the registry eat.model.tokens.TOKEN_SCORES.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from eat.model.mechanism import register
from eat.model.state import State
from eat.model.tokens import TokenReducer, TokenSchedule


@dataclass
class PruneConfig(TokenSchedule):  # layers, keep_ratios, criterion, reference_depth, segments
    KEY: ClassVar[str] = "mechanism.prune"
    WHAT: ClassVar[str] = "pruning"


@register("prune", PruneConfig, order=30, spelling=10)
class TokenPruner(TokenReducer):
    def reduce(self, state: State, index: Tensor, real: Tensor) -> State:
        if self.reference:  # mode=mask: the pruned tokens are zeroed and masked, the length stays
            keep = torch.zeros_like(state.mask).scatter(1, index, real)
            state.hidden = state.hidden * keep[..., None].to(state.hidden.dtype)
            state.mask, state.protected = state.mask & keep, state.protected & keep
            return state
        return state.select_tokens(index, real)
