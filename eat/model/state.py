"""What travels through the layer loop: the rows and tokens still in flight, and per-example results.

`State` shrinks as mechanisms act (rows exit, tokens are pruned); `Outputs` is allocated once for the
whole batch and filled in the batch's original order, via `State.rows`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from torch import Tensor


@dataclass
class Outputs:
    """Per-example results of one forward, in the batch's original row order."""

    logits: Tensor  # (B, C) prediction of the head each row left through
    exit_layer: Tensor  # (B,) number of layers executed (num_layers when the row never exited)
    tokens_in: Tensor  # (B,) real tokens of the input
    tokens_kept: Tensor  # (B, num_layers) real tokens still in flight after each layer (0 after exit)
    flops: Tensor  # (B,) float64, FLOPs executed for the row (its share of the shapes that ran)
    static_flops: Tensor  # (B,) float64, FLOPs the static model spends on the same batch
    # Training and calibration only: logits of every active exit head for every row (no row exits then).
    head_logits: List[Tensor] = field(default_factory=list)

    @property
    def tokens_final(self) -> Tensor:  # (B,) tokens in flight in the last layer the row ran
        return self.tokens_kept.gather(1, (self.exit_layer - 1).clamp(min=0).unsqueeze(1)).squeeze(1)


@dataclass
class State:
    hidden: Tensor  # (B', L', D) rows and tokens still in flight
    mask: Tensor  # (B', L') bool, True for real tokens
    rows: Tensor  # (B',) index of each in-flight row in the original batch
    protected: Tensor  # (B', L') bool, tokens pruning must keep ([CLS], every [SEP] of a pair)
    out: Outputs
    # Attention each token received in the layer just run (B', L'), when a mechanism asked for it.
    received: Optional[Tensor] = None
    # A mechanism's own bookkeeping, under keys it chooses (prefixed by its name, e.g. "exit.agree"): per-row
    # tensors (B', ...) follow the rows that stay (early exit's patience counters), per-token tensors (B', L', ...)
    # follow the tokens that stay (how many input tokens a merged token stands for). The loop never reads them.
    row_slots: Dict[str, Tensor] = field(default_factory=dict)
    token_slots: Dict[str, Tensor] = field(default_factory=dict)
    # What a fused runtime computed inside the layer just run for a mechanism (`Mechanism.readout`), by plugin
    # name. Only for the rows and tokens the layer ran: select_rows / select_tokens drop it, so a mechanism
    # after a reducing one computes its readout itself.
    readouts: Dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.hidden.shape[0]

    @property
    def length(self) -> int:
        return self.hidden.shape[1]

    def spend(self, flops) -> None:
        """Add what a mechanism computed for the rows in flight ((B',) tensor or one number each) to their FLOPs."""
        if self.batch == self.out.flops.shape[0]:  # every row still in flight, in order: no indexed write
            self.out.flops += flops
        else:
            self.out.flops[self.rows] += flops

    def select_rows(self, keep: Tensor, trim: bool = True) -> "State":
        """Keep the rows where `keep` (B',) is True; the batch really gets smaller.

        trim: also drop the trailing token slots that are padding in every row that stays. The rows that left
        may have been the longest ones, and the batch was padded to them; the rest are re-padded to their own
        longest row. Exact: a padded slot is a masked key and a query nobody reads."""
        idx = keep.nonzero().squeeze(1)
        mask = self.mask.index_select(0, idx)  # (B'', L')
        length = self.length
        if trim and idx.numel() > 0:
            real = mask.any(0)  # (L',) slots real in some row that stays
            length = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
        rows = lambda t: None if t is None else t.index_select(0, idx)  # noqa: E731
        # slice before gathering, so the gathered tensor is contiguous at its new length
        toks = lambda t: None if t is None else t[:, :length].index_select(0, idx)  # noqa: E731
        return State(toks(self.hidden), mask[:, :length], rows(self.rows), toks(self.protected), self.out,
                     toks(self.received), {k: rows(v) for k, v in self.row_slots.items()},
                     {k: toks(v) for k, v in self.token_slots.items()})

    def select_tokens(self, index: Tensor, mask: Tensor) -> "State":
        """Gather tokens `index` (B', L'') per row; `mask` (B', L'') marks which gathered slots are real."""
        def take(t: Tensor) -> Tensor:  # (B', L', ...) -> (B', L'', ...)
            return t.gather(1, index.view(*index.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))

        protected = self.protected.gather(1, index) & mask
        received = None if self.received is None else take(self.received)  # a second reducer of the layer reads it
        return State(take(self.hidden), mask, self.rows, protected, self.out, received, dict(self.row_slots),
                     {k: take(v) for k, v in self.token_slots.items()})
