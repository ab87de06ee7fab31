"""Temperature scaling of the exit heads (Guo et al., 2017, "On Calibration of Modern Neural Networks").

A confidence threshold means the same thing at every layer only if every head's confidences are calibrated:
a shallow head that says 0.9 should be right 90% of the time. Each head gets one scalar T dividing its
logits, fitted by minimising the negative log-likelihood on labelled rows, with the exits switched off so
that every head sees every row. T never changes a head's argmax, hence its accuracy; it changes which rows
are sure enough to leave.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from eat.mechanisms.early_exit import EarlyExit
from eat.model.encoder import Encoder


def exit_mechanism(encoder: Encoder) -> EarlyExit:
    """The encoder's early-exit plug-in (found by type: a combination may name it anything)."""
    found = [m for m in encoder.mechanisms.values() if isinstance(m, EarlyExit)]
    if not found:
        raise ValueError("this encoder has no early-exit mechanism (mechanism.exit is not set)")
    return found[0]


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising cross_entropy(logits / T, labels); optimised as log T so it stays positive."""
    logits, labels = logits.detach().float(), labels.detach()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


@torch.no_grad()
def exit_head_logits(encoder: Encoder, batches, final: bool = False) -> Tuple[Dict[int, Tensor], Tensor]:
    """({layer index: (N, C) logits of its exit head, uncalibrated}, (N,) labels), with the exits switched off.
    final=True adds the final head's logits under the last layer's index."""
    exit_ = exit_mechanism(encoder)
    saved_t, was_training = exit_.temperature.clone(), encoder.training
    exit_.temperature.fill_(1.0)
    exit_.collect_all = True
    encoder.eval()
    per_head: Dict[int, List[Tensor]] = {layer: [] for layer in exit_.active}
    labels: List[Tensor] = []
    try:
        dev = next(encoder.parameters()).device
        for b in batches:
            b = {k: v.to(dev) for k, v in b.items()}
            out = encoder(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))
            for layer, z in zip(exit_.active, out.head_logits):
                per_head[layer].append(z)
            if final:
                per_head.setdefault(len(encoder.layers) - 1, []).append(out.logits)
            labels.append(b["labels"])
    finally:
        exit_.collect_all = False
        exit_.temperature.copy_(saved_t)
        encoder.train(was_training)
    return {layer: torch.cat(z) for layer, z in per_head.items()}, torch.cat(labels)


def calibrate_exits(encoder: Encoder, batches) -> Dict[int, float]:
    """Fit and set the temperature of every active exit head; returns {layer (1-based): T}."""
    exit_ = exit_mechanism(encoder)
    logits, labels = exit_head_logits(encoder, batches)
    fitted = {}
    for layer, z in logits.items():
        t = fit_temperature(z, labels)
        exit_.temperature[exit_.layers.index(layer)] = t
        fitted[layer + 1] = t
    return fitted
