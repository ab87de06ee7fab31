"""The dense attention kernel (sdpa) and the attention-function protocol every layer calls.

An attention function takes q, k, v of shape (B, H, L, dh), whether the attention each token received is
needed, and the dropout probability; it returns (context (B, H, L, dh), attention received per key (B, L) or
None, FLOPs per row of the two matmuls). "Received" sums the attention probabilities over heads and real
queries (PoWER-BERT's importance). Mechanisms (eat/mechanisms/) supply other attention functions.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# attend(q, k, v, need_received, dropout_p) -> (context (B,H,L,dh), received (B,L) or None, FLOPs per row)
AttentionFn = Callable[[Tensor, Tensor, Tensor, bool, float], Tuple[Tensor, Optional[Tensor], float]]
Result = Tuple[Tensor, Optional[Tensor], float]


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """bool -> float additive mask (0 where allowed, dtype min elsewhere); float masks work everywhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


# Above this many queries the attention received is summed chunk by chunk next to the fused sdpa kernel,
# instead of materialising the whole (B, H, L, L) probability matrix (805 MB per layer at 4,096 tokens).
RECEIVED_CHUNK = 256


def received_attention(q: Tensor, k: Tensor, bias: Tensor, query_mask: Tensor, chunk: int = RECEIVED_CHUNK) -> Tensor:
    """(B, L): attention probability each key receives, summed over heads and real queries; peak memory
    O(B x H x chunk x L) instead of O(B x H x L x L)."""
    Lq = q.shape[2]
    received = q.new_zeros(q.shape[0], k.shape[2])
    for s in range(0, Lq, chunk):
        b = bias[:, :, s:s + chunk] if bias.shape[2] == Lq else bias
        probs = ((q[:, :, s:s + chunk] @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + b).softmax(-1)  # (B, H, c, L)
        received += (probs * query_mask[:, None, s:s + chunk, None]).sum((1, 2))
    return received


def masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, mask: Tensor, need_received: bool,
                     dropout_p: float) -> Tuple[Tensor, Optional[Tensor], float]:
    """Dense attention under a broadcastable (B, 1, Lq|1, L) `allowed` mask; `mask` (B, Lq) marks real queries.
    The third value is the FLOPs per row spent beyond the two matmuls of attention itself: the chunked
    received-attention pass recomputes q k^T (2 x H x Lq x L x dh) next to the fused kernel."""
    bias = additive_mask(allowed, q.dtype)
    if not need_received:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p), None, 0.0
    if q.shape[2] > RECEIVED_CHUNK:  # long: fused kernel for the context, received attention in chunks
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
        H, Lq, dh = q.shape[1], q.shape[2], q.shape[3]
        return ctx, received_attention(q, k, bias, mask), 2.0 * H * Lq * k.shape[2] * dh
    probs = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias).softmax(-1)  # (B, H, L, L)
    received = (probs * mask[:, None, :, None]).sum((1, 2))  # (B, L)
    return F.dropout(probs, dropout_p) @ v, received, 0.0


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, need_received: bool = False,
                    dropout_p: float = 0.0) -> Result:
    B, H, L, dh = q.shape
    ctx, received, extra = masked_attention(q, k, v, mask[:, None, None, :], mask, need_received, dropout_p)
    return ctx, received, 4.0 * H * L * L * dh + extra


class MaskedAttention:
    """An attention function that equals dense attention under a mask `allowed()` (B, 1, Lq or 1, L) of
    which keys each query may see. A runtime that runs a whole layer as one fused graph (ONNX Runtime,
    eat/runtimes.py) cannot call a Python attention function inside it: it reads the mask instead and
    applies it in the graph. The mask is built only when asked for, so the eager path pays nothing."""

    def __init__(self, fn: AttentionFn, allowed: Callable[[], Tensor], query_mask: Tensor):
        self.fn, self.allowed, self.query_mask = fn, allowed, query_mask  # query_mask (B, L): real queries

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, need_received: bool, dropout_p: float) -> Result:
        return self.fn(q, k, v, need_received, dropout_p)
