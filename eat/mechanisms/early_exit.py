"""Dynamic early exit, decided per example at any batch size.

After each exit layer a small head classifies the rows in flight; the rows that are sure leave the
batch (their logits land in their original slot), the rest continue as a smaller batch.
mode=mask reproduces the reference: one head, and the batch exits only if *every* row is sure.
While training no row exits: every head's logits are kept for the joint loss.
Exit criteria are the registry CRITERIA: a new one is one small function with `@criterion(...)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eat.checks import ConfigError, check, choice
from eat.model.config import EncoderConfig
from eat.model.mechanism import Mechanism, register, scaled_layers
from eat.model.tokens import second_segment
from eat.model.state import State


@dataclass(frozen=True)
class Criterion:
    sure: Callable[[Tensor, "EarlyExit", State], Tensor]  # (probs (B', C), the mechanism, state) -> (B',) bool
    threshold: Optional[tuple]  # (low, high, low_inclusive) range of mechanism.exit.threshold; None: not read
    rule: str = ""  # the range in words, for the error message
    probabilities: bool = True  # reads probabilities (temperatures change it), not just predictions


CRITERIA: Dict[str, Criterion] = {}


def criterion(name: str, threshold: Optional[tuple] = None, rule: str = "", probabilities: bool = True):
    """Register an exit criterion: `mechanism.exit.criterion=<name>`."""
    def deco(fn):
        CRITERIA[name] = Criterion(fn, threshold, rule, probabilities)
        return fn
    return deco


@criterion("confidence", (0.0, 1.0, False), "confidence threshold must be in (0, 1]")
def confident(probs: Tensor, ex: "EarlyExit", state: State) -> Tensor:
    """The paper's: exit when the top class probability reaches the threshold."""
    return probs.max(-1).values >= ex.threshold


@criterion("entropy", (0.0, 1.0, True), "normalised-entropy threshold must be in [0, 1]")
def low_entropy(probs: Tensor, ex: "EarlyExit", state: State) -> Tensor:
    """DeeBERT's: exit when the entropy, normalised by log(classes), falls to the threshold."""
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(probs.shape[-1])
    return ent <= ex.threshold


@criterion("patience", probabilities=False)
def patient(probs: Tensor, ex: "EarlyExit", state: State) -> Tensor:
    """PABEE's: exit once `patience` consecutive heads agree; the counters live in the state's row slots."""
    pred = probs.argmax(-1)
    last = state.row_slots.get("exit.last_pred")
    agree = torch.zeros_like(pred) if last is None else \
        torch.where(pred == last, state.row_slots["exit.agree"] + 1, torch.zeros_like(pred))
    state.row_slots["exit.last_pred"], state.row_slots["exit.agree"] = pred, agree
    return agree >= ex.patience


@dataclass
class ExitConfig:
    # Layers (1-based) followed by an exit head; None: every layer but the last (the last has the final head).
    layers: Optional[List[int]] = None
    # The first layer (1-based) whose head may end rows. The heads before it stay in the model (a checkpoint loads
    # unchanged) but are not run: a shallow head that is confidently wrong costs more accuracy than its exits save
    # (RESULTS 3.12: MNLI's heads after layers 1-3 are 51-59% accurate, the final head 65%). 1: every head.
    from_layer: int = 1
    criterion: str = "confidence"  # confidence (paper) | entropy (DeeBERT) | patience (PABEE)
    threshold: float = 0.9  # confidence: exit if max prob >= t; entropy: exit if normalised entropy <= t
    patience: int = 2  # patience: exit once this many consecutive heads agree
    # What an exit head reads: mean = the mean of real tokens (all-MiniLM was trained that way), cls = [CLS],
    # pair = for sentence pairs, the mean u of the first segment and v of the second, as (u, v, |u - v|, u * v):
    # Sentence-BERT's pair classifier features (Reimers & Gurevych 2019), so a shallow linear head sees the
    # comparison the inference is made from instead of one average of both sentences. 4x the head's inputs.
    pooling: str = "mean"
    loss_weights: str = "uniform"  # uniform | layer (PABEE: weight proportional to layer index)
    final_loss_weight: float = 1.0  # extra factor for the final head: joint training taxes the last layer
    # Reference behaviour (mode=mask): only one exit head, and exit only if *every* row is confident.
    reference_layer: int = 4
    # Temperature scaling before evaluating (eat/calibration.py): one temperature per exit head, fitted on the
    # first `calibration_examples` labelled rows of this split, so a threshold means the same confidence at
    # every layer. None: the checkpoint's temperatures (1 unless calibrated before).
    calibration_split: Optional[str] = None
    calibration_examples: int = 2000
    # Self-distillation while training the exit heads: each head's loss is (1 - distill) x cross-entropy with
    # the label + distill x T^2 x KL(final head's soft labels at temperature T || head's), T = distill_temperature.
    # Heads that imitate the final layer agree with it sooner, so confident exits cost less accuracy. 0: off.
    distill: float = 0.0
    distill_temperature: float = 2.0
    # When rows exit, re-pad the rows that stay to their own longest row (State.select_rows): exact, and at
    # bs > 1 it removes the padding the exited rows had imposed. false: keep the batch's padded length (ablation).
    trim_padding: bool = True

    def __post_init__(self) -> None:
        choice("mechanism.exit.criterion", self.criterion, tuple(CRITERIA))
        crit = CRITERIA[self.criterion]
        check(0.0 <= self.distill <= 1.0, "mechanism.exit.distill", self.distill, "must be in [0, 1]")
        check(self.distill_temperature > 0, "mechanism.exit.distill_temperature", self.distill_temperature,
              "must be > 0")
        choice("mechanism.exit.pooling", self.pooling, POOLINGS)
        choice("mechanism.exit.loss_weights", self.loss_weights, ("uniform", "layer"))
        if crit.threshold is not None:
            lo, hi, lo_inclusive = crit.threshold
            check((lo <= self.threshold if lo_inclusive else lo < self.threshold) and self.threshold <= hi,
                  "mechanism.exit.threshold", self.threshold, crit.rule)
        check(self.patience >= 1, "mechanism.exit.patience", self.patience, "must be >= 1")
        check(self.from_layer >= 1, "mechanism.exit.from_layer", self.from_layer, "layers are 1-based")
        check(self.final_loss_weight > 0, "mechanism.exit.final_loss_weight", self.final_loss_weight, "must be > 0")
        check(self.calibration_examples >= 1, "mechanism.exit.calibration_examples", self.calibration_examples,
              "must be >= 1")
        if self.calibration_split is not None:
            check(crit.probabilities, "mechanism.exit.calibration_split", self.calibration_split,
                  f"temperatures change nothing under criterion={self.criterion} (it reads predictions, not "
                  f"probabilities)")
        if self.layers is not None:
            check(all(i >= 1 for i in self.layers), "mechanism.exit.layers", self.layers, "layers are 1-based")


POOLINGS = ("mean", "cls", "pair")


def _mean(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def pool(hidden: Tensor, mask: Tensor, how: str, protected: Optional[Tensor] = None) -> Tensor:
    """(B, L, D) -> (B, D): [CLS] or the mean of real tokens; pair: (B, 4D) from the two segments' means,
    the segments told apart by `protected` ([CLS] and every [SEP]); a single sentence has v = 0."""
    if how == "cls":
        return hidden[:, 0]
    if how == "pair":
        second = second_segment(protected) & mask
        u, v = _mean(hidden, mask & ~second), _mean(hidden, second)
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    return _mean(hidden, mask)


class ExitReadout(nn.Module):
    """One exit head on a layer's output: pooling, then the head (B, L, D), (B, L) -> (B, C) logits before the
    temperature. `EarlyExit.readout` hands it to fused runtimes, which run it inside the layer's graph."""

    def __init__(self, head: nn.Module, pooling: str):
        super().__init__()
        self.head, self.pooling = head, pooling
        self.needs_protected = pooling == "pair"  # the segments are told apart by the protected tokens

    def forward(self, hidden: Tensor, mask: Tensor, protected: Optional[Tensor] = None) -> Tensor:
        if self.needs_protected:
            return self.head(pool(hidden, mask.bool(), "pair", protected))
        return self.head(pool(hidden, mask, self.pooling))


@register("exit", ExitConfig, order=20, spelling=30)
class EarlyExit(Mechanism):
    def __init__(self, cfg: ExitConfig, num_layers: int, hidden: int, num_labels: int, dropout: float = 0.1,
                 batch_level: bool = False):
        super().__init__()
        if num_labels < 2:
            raise ConfigError("mechanism.exit needs a classification task (it reads class probabilities); "
                              "the task is a regression")
        self.cfg, self.num_layers, self.batch_level = cfg, num_layers, batch_level
        if cfg.layers is None:
            layers = list(range(num_layers - 1))
        else:
            bad = [i for i in cfg.layers if not 1 <= i < num_layers]
            if bad:
                raise ConfigError(f"mechanism.exit.layers={list(cfg.layers)}: {bad} outside [1, {num_layers - 1}] "
                                  f"(the last layer {num_layers} has the final head)")
            layers = sorted(i - 1 for i in set(cfg.layers))
        self.layers: List[int] = layers  # layers with a head (the checkpoint's shape)
        self.active: List[int] = [i for i in layers if i + 1 >= cfg.from_layer]  # layers whose head may end rows
        if not self.active:
            raise ConfigError(f"mechanism.exit.from_layer={cfg.from_layer}: no exit head at or after it (heads after "
                              f"layers {[i + 1 for i in layers]}); allowed: 1 to {layers[-1] + 1 if layers else 1}")
        if batch_level:  # the reference: a single exit point
            ref = scaled_layers([cfg.reference_layer], 6, num_layers, "mechanism.exit.reference_layer")
            if ref[0] not in layers:
                raise ConfigError(f"mechanism.exit.reference_layer={cfg.reference_layer} maps to layer {ref[0] + 1}, "
                                  f"which has no exit head (mechanism.exit.layers={cfg.layers})")
            self.active = ref
        self.head_inputs = hidden * (4 if cfg.pooling == "pair" else 1)
        self.heads = nn.ModuleDict({str(i): nn.Sequential(nn.Dropout(dropout), nn.Linear(self.head_inputs, num_labels))
                                    for i in layers})
        # Per-head temperature for calibrated confidences (eat/calibration.py fits it; 1 = uncalibrated).
        self.register_buffer("temperature", torch.ones(len(layers)))
        self.collect_all = False  # calibration: no row exits, every head's logits are kept (as in training)
        self.threshold = cfg.threshold  # inference-time settings: eval.py may change them
        self.patience = cfg.patience

    @classmethod
    def build(cls, cfg: ExitConfig, c: EncoderConfig, reference: bool) -> "EarlyExit":
        return cls(cfg, c.num_layers, c.hidden_size, c.num_labels, c.hidden_dropout, batch_level=reference)

    def loss_weights(self) -> List[float]:
        """Weights of the exit heads then the final head (normalised in the loss)."""
        if self.cfg.loss_weights == "layer":  # PABEE: deeper heads weigh more
            w = [float(i + 1) for i in self.active] + [float(self.num_layers)]
        else:
            w = [1.0] * (len(self.active) + 1)
        w[-1] *= self.cfg.final_loss_weight
        return w

    def readout(self, layer: int, protected: bool = False) -> Optional[nn.Module]:
        if layer not in self.active or (self.cfg.pooling == "pair" and not protected):
            return None  # pair pooling needs the segments: without them it runs in torch, after the layer
        return ExitReadout(self.heads[str(layer)], self.cfg.pooling)

    def head_logits(self, layer: int, state: State) -> Tensor:
        k = self.layers.index(layer)
        z = state.readouts.get("exit")  # computed inside a fused layer's graph, for exactly these rows and tokens
        if z is None:
            z = self.heads[str(layer)](pool(state.hidden, state.mask, self.cfg.pooling, state.protected))
        return z / self.temperature[k]

    def sure(self, logits: Tensor, state: State) -> Tensor:
        """(B',) bool: which rows exit now."""
        return CRITERIA[self.cfg.criterion].sure(logits.float().softmax(-1), self, state)

    def after_layer(self, layer: int, state: State) -> State:
        if layer not in self.active:
            return state
        logits = self.head_logits(layer, state)  # (B', C)
        state.spend(2.0 * logits.shape[-1] * self.head_inputs)
        if self.training or self.collect_all:
            state.out.head_logits.append(logits)
            return state
        exit_now = self.sure(logits, state)
        if self.batch_level:
            exit_now = exit_now.all().expand_as(exit_now)
        if not bool(exit_now.any()):
            return state
        rows = state.rows[exit_now]
        state.out.logits[rows] = logits[exit_now].to(state.out.logits.dtype)
        state.out.exit_layer[rows] = layer + 1
        return state.select_rows(~exit_now, trim=self.cfg.trim_padding)

    def training_loss(self, out, labels: Tensor, teacher_logits: Optional[Tensor] = None) -> Optional[Tensor]:
        return self.joint_loss(out.head_logits, out.logits, labels, teacher_logits) if out.head_logits else None

    def joint_loss(self, head_logits: List[Tensor], final_logits: Tensor, labels: Tensor,
                   teacher_logits: Optional[Tensor] = None) -> Tensor:
        """Weighted mean over heads of each head's loss. Distillation (distill = a > 0): a head's loss is
        (1 - a) CE + a T^2 KL(soft labels || head). The soft labels are the final head's (self-distillation: the
        exit heads learn, the final head only teaches) or, with `teacher_logits`, a frozen teacher's, which every
        head learns from, the final one included."""
        w = self.loss_weights()
        zs = [*head_logits, final_logits]
        losses = [F.cross_entropy(z, labels) for z in zs]
        a, T = self.cfg.distill, self.cfg.distill_temperature
        if a > 0:
            students = len(zs) if teacher_logits is not None else len(head_logits)
            soft = F.softmax((final_logits if teacher_logits is None else teacher_logits).detach().float() / T, -1)
            losses[:students] = [(1 - a) * ce + a * T * T * F.kl_div(F.log_softmax(z.float() / T, -1), soft,
                                                                      reduction="batchmean")
                                 for ce, z in zip(losses[:students], zs)]
        return sum(wi * li for wi, li in zip(w, losses)) / sum(w)
