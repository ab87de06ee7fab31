"""Input-adaptive mechanisms, each one small module plugged into the encoder's layer loop."""
from __future__ import annotations

from typing import Dict

from eat.config import MechanismConfig
from eat.mechanisms.attention import SparseAttention
from eat.mechanisms.base import Mechanism
from eat.mechanisms.early_exit import EarlyExit
from eat.mechanisms.pruning import TokenPruner


def build_mechanisms(cfg: MechanismConfig, c) -> Dict[str, Mechanism]:
    """Mechanisms in the order the loop consults them: attention, then exit, then pruning (rows that
    exit are not pruned). `c` is the EncoderConfig. mode=mask builds the reference's behaviour."""
    ref = cfg.mode == "mask"
    out: Dict[str, Mechanism] = {}
    if cfg.sparse is not None:
        out["sparse"] = SparseAttention(cfg.sparse, masked_reference=ref)
    if cfg.exit is not None:
        out["exit"] = EarlyExit(cfg.exit, c.num_layers, c.hidden_size, c.num_labels, c.hidden_dropout, batch_level=ref)
    if cfg.prune is not None:
        out["prune"] = TokenPruner(cfg.prune, c.num_layers, zero_mask=ref)
    return out


__all__ = ["Mechanism", "SparseAttention", "EarlyExit", "TokenPruner", "build_mechanisms"]
