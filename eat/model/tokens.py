"""Which tokens stay: importance scores (a registry of small functions) and the choice of the kept tokens of
each row, shared by every mechanism that shortens the sequence (prune drops the rest, merge folds them in).

The number kept depends only on the row's own real length, so a row keeps the same tokens at any batch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from eat.checks import check, choice
from eat.model.config import EncoderConfig
from eat.model.mechanism import Mechanism, scaled_layers
from eat.model.state import State


@dataclass(frozen=True)
class TokenScore:
    fn: Callable[[State], Tensor]  # state -> (B', L') importance, higher is kept first
    needs_received: bool  # reads state.received (the layer must return the attention each token received)


TOKEN_SCORES: Dict[str, TokenScore] = {}


def token_score(name: str, needs_received: bool = False):
    """Register an importance score: `criterion=<name>` of mechanism.prune / mechanism.merge."""
    def deco(fn: Callable[[State], Tensor]) -> Callable[[State], Tensor]:
        TOKEN_SCORES[name] = TokenScore(fn, needs_received)
        return fn
    return deco


@token_score("attention", needs_received=True)
def received(state: State) -> Tensor:
    """Attention received from every head and real query (PoWER-BERT)."""
    return state.received


@token_score("norm")
def hidden_norm(state: State) -> Tensor:
    """L2 norm of the hidden state (the paper's criterion)."""
    return state.hidden.norm(dim=-1)


def second_segment(protected: Tensor) -> Tensor:
    """(B, L) bool: the tokens after a pair's first [SEP]. `protected` marks [CLS] and every [SEP] of a pair
    (Encoder.protected_tokens), in token order, so a token is in the second segment when at least two
    protected tokens precede it; single sentences (only [CLS] protected) have none."""
    p = protected.long()
    return (p.cumsum(1) - p) >= 2


def _ceil(ratio: float, n: Tensor) -> Tensor:
    """ceil(ratio * n) without float noise: a ratio of 1.0 keeps every token."""
    return torch.ceil(ratio * n.double() - 1e-6).long()


def _keep_per_segment(scores: Tensor, segment: Tensor, ratio: float, protected: Tensor) -> Tensor:
    """(B', L') bool: the best ceil(ratio x n) real tokens of `segment` in each row (its protected ones
    included), so a segment keeps its share whatever the other one scores."""
    n_keep = torch.maximum(_ceil(ratio, segment.sum(1)), (protected & segment).sum(1))
    s = scores.masked_fill(~segment, -math.inf)
    rank = s.argsort(dim=1, descending=True, stable=True).argsort(dim=1)  # (B', L') 0 = best
    return segment & (rank < n_keep[:, None])


def kept_tokens(state: State, criterion: str, ratio: float, segments: bool) -> Tuple[Tensor, Tensor]:
    """The tokens each row keeps: (index (B', L'') of the kept tokens in token order, real (B', L'') bool marking
    the slots that hold a kept token; the rest are padding of shorter rows). Every protected token is kept;
    with `segments`, a sentence pair keeps `ratio` of each segment and every [SEP], else `ratio` of the whole
    row and only [CLS] and the first [SEP]."""
    mask, L = state.mask, state.length
    protected = state.protected
    if not segments:  # earlier behaviour: [CLS] and a pair's first [SEP] only
        protected = protected & (protected.long().cumsum(1) <= 2)
    scores = TOKEN_SCORES[criterion].fn(state)  # (B', L')
    scores = scores.float().masked_fill(~mask, -math.inf).masked_fill(protected, math.inf)
    second: Optional[Tensor] = second_segment(state.protected) & mask if segments else None
    if second is not None and bool(second.any()):  # sentence pairs: the ratio within each segment
        keep = _keep_per_segment(scores, mask & ~second, ratio, protected) | \
            _keep_per_segment(scores, second, ratio, protected)  # (B', L')
        n_keep = keep.sum(1)
        L_new = int(n_keep.max())
        pos = torch.arange(L, device=mask.device).expand_as(mask)
        order = torch.where(keep, pos, pos + L).sort(dim=1).values[:, :L_new]  # kept tokens first, in order
        real = torch.arange(L_new, device=mask.device)[None, :] < n_keep[:, None]
    else:
        n_keep = torch.maximum(_ceil(ratio, mask.sum(1)), protected.sum(1)).clamp(max=L)
        L_new = int(n_keep.max())
        top = scores.topk(L_new, dim=1).indices  # (B', L_new), best first
        real = torch.arange(L_new, device=mask.device)[None, :] < n_keep[:, None]
        # Back to original token order; the padding slots sort to the end.
        order = torch.where(real, top, top + L).sort(dim=1).values
    return torch.where(order >= L, order - L, order), real


@dataclass
class TokenSchedule:
    """The config of a token reducer (mechanism.prune, mechanism.merge): after these layers (1-based, written for a
    `reference_depth`-layer encoder and rescaled to the model's depth: the paper's "after layers 2 and 4" of 6 are
    layers 4 and 8 of a 12-layer BERT) keep these shares of each row's real tokens. One schedule for both, so
    pruning and merging compare at equal token retention."""

    KEY: ClassVar[str] = "mechanism.?"  # the config key, for the messages
    WHAT: ClassVar[str] = "reduction"

    layers: List[int] = field(default_factory=lambda: [2, 4])
    keep_ratios: List[float] = field(default_factory=lambda: [0.7, 0.7])
    criterion: str = "attention"  # TOKEN_SCORES: attention (received, PoWER-BERT) | norm (hidden-state L2, the paper)
    reference_depth: int = 6
    # Sentence pairs: the keep ratio applies within each segment (neither sentence can lose all its tokens) and
    # every [SEP] is kept. false: one ratio over the whole pair, only [CLS] and the first [SEP] kept (earlier
    # behaviour, for the ablation). Single sentences are reduced the same either way.
    segments: bool = True

    def __post_init__(self) -> None:
        check_schedule(self.KEY, self, self.WHAT)


def check_schedule(key: str, cfg, what: str = "pruning") -> None:
    """The checks of a token-reduction schedule (layers, keep_ratios, criterion, reference_depth)."""
    choice(f"{key}.criterion", cfg.criterion, tuple(TOKEN_SCORES))
    check(len(cfg.layers) == len(cfg.keep_ratios), f"{key}.keep_ratios", cfg.keep_ratios,
          f"needs one ratio per {what} layer ({len(cfg.layers)} layers: {cfg.layers})")
    for r in cfg.keep_ratios:
        check(0.0 < r <= 1.0, f"{key}.keep_ratios", r, "each ratio must be in (0, 1]")
    for i in cfg.layers:
        check(1 <= i <= cfg.reference_depth, f"{key}.layers", i, f"must be in [1, reference_depth={cfg.reference_depth}]")
    check(list(cfg.layers) == sorted(set(cfg.layers)), f"{key}.layers", cfg.layers, "must be strictly increasing")


class TokenReducer(Mechanism):
    """The shared half of every mechanism that shortens the sequence on a schedule (prune, merge): the rescaled
    layers with their keep ratios and the received attention the criterion needs there. A subclass writes only
    its `reduce`; `self.reference` is mode=mask (keep the length, zero and mask instead of gathering)."""

    def __init__(self, cfg: TokenSchedule, num_layers: int, reference: bool = False):
        super().__init__()
        self.cfg, self.reference = cfg, reference
        layers = scaled_layers(cfg.layers, cfg.reference_depth, num_layers, f"{cfg.KEY}.layers")
        self.keep: Dict[int, float] = dict(zip(layers, cfg.keep_ratios))

    @classmethod
    def build(cls, cfg: TokenSchedule, c: EncoderConfig, reference: bool) -> "TokenReducer":
        return cls(cfg, c.num_layers, reference=reference)

    def wants_received_attention(self, layer: int) -> bool:
        return TOKEN_SCORES[self.cfg.criterion].needs_received and layer in self.keep

    def after_layer(self, layer: int, state: State) -> State:
        if layer not in self.keep:
            return state
        return self.reduce(state, *kept_tokens(state, self.cfg.criterion, self.keep[layer], self.cfg.segments))

    def reduce(self, state: State, index: Tensor, real: Tensor) -> State:
        """Shorten `state` to the kept tokens: `index` (B', L'') their positions in original order, `real` (B', L'')
        False on the padding slots of rows that keep fewer."""
        raise NotImplementedError
