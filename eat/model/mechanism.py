"""The one interface between a mechanism and the encoder's layer loop, and the registry of mechanisms.

For each layer the loop asks every plugged mechanism, in the registry's order:
  1. `attention(layer, state)`: an attention function to use instead of dense attention (or None);
  2. `wants_received_attention(layer)`: whether it needs the attention each token received;
and after the layer has run:
  3. `after_layer(layer, state)`: returns the state to continue with (rows may leave, tokens may be
     dropped); `state.received` holds the attention each token received, when asked for.
The static model is the same loop with no mechanism plugged in.
Optional, for fused runtimes: `readout(layer)` offers the small computation `after_layer` makes on the layer's
output (early exit's pooled head) as a module, so a runtime that runs the layer as one graph computes it inside
that graph (eat/runtimes.py) and hands the result over in `state.readouts[name]`; eager runs never ask.

A mechanism is a plug-in: one module in eat/mechanisms/ that defines its config dataclass (the block
`mechanism.<name>`) and its `Mechanism` subclass, registered with `@register(...)`. It keeps its own per-row or
per-token bookkeeping in `State.row_slots` / `State.token_slots` and adds the FLOPs it computes with
`State.spend`. Modules in eat/mechanisms/ are imported (and so registered) by `import eat.mechanisms`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Type

from torch import nn

from eat.checks import ConfigError
from eat.model.config import EncoderConfig
from eat.model.kernels import AttentionFn
from eat.model.state import State


class Mechanism(nn.Module):
    def attention(self, layer: int, state: State) -> Optional[AttentionFn]:
        return None

    def wants_received_attention(self, layer: int) -> bool:
        return False

    def after_layer(self, layer: int, state: State) -> State:
        return state

    def readout(self, layer: int, protected: bool = False) -> Optional[nn.Module]:
        """A module (hidden (B, L, D), mask (B, L) float[, protected (B, L) bool]) -> (B, ...) that
        `after_layer(layer, ...)` computes from the layer's output, or None. A fused runtime may run it inside the
        layer's graph; `after_layer` then finds the result in `state.readouts[<plugin name>]` and must compute it
        itself when it is absent. `protected`: the runtime can also feed the rows' protected tokens (State.protected,
        which mark the segments); a module that reads them says so with `needs_protected = True`."""
        return None

    def training_loss(self, out, labels, teacher_logits=None):
        """The training loss if this mechanism defines one for the forward's Outputs `out` (early exit's joint
        loss over every head), else None: the LightningModule then uses the final head's cross-entropy.
        `teacher_logits`: a frozen teacher's (teacher_ckpt), when the run has one."""
        return None

    @classmethod
    def build(cls, cfg, c: EncoderConfig, reference: bool) -> "Mechanism":
        """The mechanism for its config block `cfg`, a model of shape `c`; `reference` (mechanism.mode=mask): the
        reference implementation's behaviour (dense masks, zeroed tokens, batch-level exits)."""
        raise NotImplementedError(f"{cls.__name__}.build")


@dataclass(frozen=True)
class Plugin:
    name: str  # the config block `mechanism.<name>` and the part of a combination's name
    config: type  # the block's dataclass (defaults and value checks)
    cls: Type[Mechanism]
    order: int  # position in the layer loop: after_layer runs in this order (exit before prune: exited rows are
    #             not pruned)
    spelling: int  # position in a combination's name: prune+sparse+exit


PLUGINS: Dict[str, Plugin] = {}


def register(name: str, config: type, order: int, spelling: Optional[int] = None):
    """Class decorator: make a Mechanism subclass the plug-in `name`, configured by the dataclass `config`."""
    def deco(cls: Type[Mechanism]) -> Type[Mechanism]:
        if name in PLUGINS and PLUGINS[name].cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"mechanism {name!r} is registered twice ({PLUGINS[name].cls.__qualname__}, "
                             f"{cls.__qualname__})")
        PLUGINS[name] = Plugin(name, config, cls, order, order if spelling is None else spelling)
        return cls
    return deco


def in_loop_order() -> List[Plugin]:
    return sorted(PLUGINS.values(), key=lambda p: (p.order, p.name))


def in_name_order() -> List[Plugin]:
    return sorted(PLUGINS.values(), key=lambda p: (p.spelling, p.name))


def combination_name(present) -> str:
    """The name of a combination from the blocks it has: prune+sparse+exit; `none` for the static model."""
    return "+".join(p.name for p in in_name_order() if p.name in present) or "none"


def build_mechanisms(cfg, c: EncoderConfig) -> Dict[str, Mechanism]:
    """The mechanisms of a `mechanism` config (eat.config.MechanismConfig), in the loop's order."""
    return {p.name: p.cls.build(getattr(cfg, p.name), c, cfg.reference) for p in in_loop_order()
            if getattr(cfg, p.name, None) is not None}


def scaled_layers(layers, reference_depth: int, num_layers: int, key: str) -> list:
    """Map 1-based layer indices written for `reference_depth` layers onto a `num_layers` model (0-based)."""
    out = [max(1, round(i * num_layers / reference_depth)) - 1 for i in layers]
    if len(set(out)) != len(out) or max(out) >= num_layers - 1:
        raise ConfigError(f"{key}={list(layers)} (for {reference_depth} layers) maps to layers "
                          f"{[i + 1 for i in out]} of this {num_layers}-layer model; they must be distinct "
                          f"and before the last layer")
    return out
