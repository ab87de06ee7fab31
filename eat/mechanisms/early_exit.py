"""Dynamic early exit, decided per example at any batch size.

After each exit layer a small head classifies the rows in flight; the rows that are sure leave the
batch (their logits land in their original slot), the rest continue as a smaller batch.
mode=mask reproduces the reference: one head, and the batch exits only if *every* row is sure.
While training no row exits: every head's logits are kept for the joint loss.
"""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eat.config import ConfigError, ExitConfig
from eat.mechanisms.base import Mechanism
from eat.mechanisms.pruning import scaled_layers
from eat.model.state import State


def pool(hidden: Tensor, mask: Tensor, how: str) -> Tensor:
    """(B, L, D) -> (B, D): [CLS] or the mean of real tokens."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


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
        self.active: List[int] = layers  # layers whose head may end rows here
        if batch_level:  # the reference: a single exit point
            ref = scaled_layers([cfg.reference_layer], 6, num_layers, "mechanism.exit.reference_layer")
            if ref[0] not in layers:
                raise ConfigError(f"mechanism.exit.reference_layer={cfg.reference_layer} maps to layer {ref[0] + 1}, "
                                  f"which has no exit head (mechanism.exit.layers={cfg.layers})")
            self.active = ref
        self.heads = nn.ModuleDict({str(i): nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))
                                    for i in layers})
        # Per-head temperature for calibrated confidences (eat/calibration.py fits it; 1 = uncalibrated).
        self.register_buffer("temperature", torch.ones(len(layers)))
        self.collect_all = False  # calibration: no row exits, every head's logits are kept (as in training)
        self.threshold = cfg.threshold  # inference-time settings: eval.py may change them
        self.patience = cfg.patience

    def loss_weights(self) -> List[float]:
        """Weights of the exit heads then the final head (normalised in the loss)."""
        if self.cfg.loss_weights == "layer":  # PABEE: deeper heads weigh more
            w = [float(i + 1) for i in self.active] + [float(self.num_layers)]
        else:
            w = [1.0] * (len(self.active) + 1)
        w[-1] *= self.cfg.final_loss_weight
        return w

    def head_logits(self, layer: int, state: State) -> Tensor:
        k = self.layers.index(layer)
        return self.heads[str(layer)](pool(state.hidden, state.mask, self.cfg.pooling)) / self.temperature[k]

    def sure(self, logits: Tensor, state: State) -> Tensor:
        """(B',) bool: which rows exit now."""
        probs = logits.float().softmax(-1)
        if self.cfg.criterion == "confidence":
            return probs.max(-1).values >= self.threshold
        if self.cfg.criterion == "entropy":
            ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1) / math.log(probs.shape[-1])
            return ent <= self.threshold
        pred = probs.argmax(-1)  # patience: consecutive heads agreeing
        agree = torch.zeros_like(pred) if state.last_pred is None else \
            torch.where(pred == state.last_pred, state.agree + 1, torch.zeros_like(pred))
        state.last_pred, state.agree = pred, agree
        return agree >= self.patience

    def after_layer(self, layer: int, state: State) -> State:
        if layer not in self.active:
            return state
        logits = self.head_logits(layer, state)  # (B', C)
        state.out.flops[state.rows] += 2.0 * logits.shape[-1] * state.hidden.shape[-1]
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
        return state.select_rows(~exit_now)

    def joint_loss(self, head_logits: List[Tensor], final_logits: Tensor, labels: Tensor) -> Tensor:
        w = self.loss_weights()
        losses = [F.cross_entropy(z, labels) for z in [*head_logits, final_logits]]
        a, T = self.cfg.distill, self.cfg.distill_temperature
        if a > 0:  # self-distillation: the exit heads also imitate the final head's soft labels (a teacher only)
            teacher = F.softmax(final_logits.detach().float() / T, -1)
            losses[:-1] = [(1 - a) * ce + a * T * T * F.kl_div(F.log_softmax(z.float() / T, -1), teacher,
                                                                reduction="batchmean")
                           for ce, z in zip(losses[:-1], head_logits)]
        return sum(wi * li for wi, li in zip(w, losses)) / sum(w)
