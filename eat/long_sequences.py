"""The long-sequence study's models and inputs (experiments/bench_long_sequences.py times them,
experiments/long_sequences_flops_recount.py recounts their FLOPs): MiniLM-L6's shape (6 layers, hidden 384,
12 heads) with random weights, position embeddings extended to the longest length, one encoder per
mechanism, and synthetic token ids at batch size 1.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch

from eat.config import MechanismConfig, PruneConfig, SparseConfig
from eat.model.encoder import EncoderConfig


def mechanisms(window: int) -> Dict[str, MechanismConfig]:
    """The study's configurations, by name: dense, local attention of `window`, pruning, both."""
    sparse = SparseConfig(window=window)
    prune = PruneConfig()
    return {
        "none": MechanismConfig(name="none"),
        "sparse": MechanismConfig(name="sparse", sparse=sparse),
        "prune": MechanismConfig(name="prune", prune=prune),
        "prune+sparse": MechanismConfig(name="prune+sparse", prune=prune, sparse=sparse),
    }


def encoder_config(lengths: Iterable[int]) -> EncoderConfig:
    """MiniLM-L6's shape (the EncoderConfig defaults), with room for the longest of `lengths`."""
    return EncoderConfig(max_position_embeddings=max(lengths), num_labels=2)


def synthetic_input(length: int, vocab_size: int,
                    device: Optional[torch.device] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One sequence of `length` random token ids between [CLS] and [SEP], and its all-ones attention mask.
    Draws from torch's global generator (seed it first for the same ids)."""
    ids = torch.randint(1000, vocab_size, (1, length))
    ids[0, 0], ids[0, -1] = 101, 102
    return ids.to(device), torch.ones(1, length, dtype=torch.long, device=device)
