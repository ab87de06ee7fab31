"""Attention kernels: dense (sdpa), local window + global [CLS] (blocked, O(L x window)), and the
dense-masked local reference (O(L^2), the reference implementation's way; kept for tests and mode=mask).

All take q, k, v of shape (B, H, L, dh) and a key mask (B, L) of real tokens, and return
(context (B, H, L, dh), attention received per key (B, L) or None, FLOPs per row of the two matmuls).
"Received" sums the attention probabilities over heads and real queries (PoWER-BERT's importance).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from eat.config import SparseConfig
from eat.mechanisms.base import AttentionFn, Mechanism
from eat.model.state import State

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


def _masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, mask: Tensor, need_received: bool,
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
    ctx, received, extra = _masked_attention(q, k, v, mask[:, None, None, :], mask, need_received, dropout_p)
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


def local_allowed(L: int, half: int, global_cls: bool, device=None) -> Tensor:
    """(L, L) bool: query i may see key j when |i - j| <= half, plus [CLS] row and column if global."""
    i = torch.arange(L, device=device)
    allowed = (i[:, None] - i[None, :]).abs() <= half
    if global_cls:
        allowed[0, :] = True
        allowed[:, 0] = True
    return allowed


def masked_local_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, half: int, global_cls: bool,
                           need_received: bool = False, dropout_p: float = 0.0) -> Result:
    """Local attention as a dense L x L mask: the same result as the blocked kernel, at dense cost."""
    B, H, L, dh = q.shape
    allowed = local_allowed(L, half, global_cls, q.device)[None, None] & mask[:, None, None, :]
    ctx, received, extra = _masked_attention(q, k, v, allowed, mask, need_received, dropout_p)
    return ctx, received, 4.0 * H * L * L * dh + extra


def blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, half: int, global_cls: bool,
                            block: int, need_received: bool = False, dropout_p: float = 0.0) -> Result:
    """Local attention in O(L x (block + 2 half)): queries in blocks, each against its own key band."""
    B, H, L, dh = q.shape
    nb = -(-L // block)
    Lp, W = nb * block, block + 2 * half  # padded length; keys a query block can see

    def blocks(t: Tensor) -> Tensor:  # (B, H, L, dh) -> (B * nb, H, block, dh): blocks become batch rows
        return F.pad(t, (0, 0, 0, Lp - L)).view(B, H, nb, block, dh).transpose(1, 2).reshape(B * nb, H, block, dh)

    def bands(t: Tensor) -> Tensor:  # (B, H, L, dh) -> (B * nb, H, W, dh): the keys each block can see
        w = F.pad(t, (0, 0, half, Lp - L + half)).unfold(2, W, block)  # (B, H, nb, dh, W)
        return w.permute(0, 2, 1, 4, 3).reshape(B * nb, H, W, dh)

    qb, kb, vb = blocks(q), bands(k), bands(v)
    mw = F.pad(mask, (half, Lp - L + half), value=False).unfold(1, W, block)  # (B, nb, W)
    # Query a of a block sees band slot w when its key j = a + w - half is within +-half of it.
    a, w = torch.arange(block, device=q.device)[:, None], torch.arange(W, device=q.device)[None, :]
    band = (w - a >= 0) & (w - a <= 2 * half)  # (block, W)
    allowed = band[None, None] & mw[:, :, None, :]  # (B, nb, block, W)
    if global_cls:  # every query also sees [CLS], unless [CLS] is already in its band
        qpos = torch.arange(Lp, device=q.device).view(nb, block)
        cls_ok = (qpos > half)[None] & mask[:, :1, None]  # (B, nb, block)
        cls_kv = lambda t: t[:, :, None, :1].expand(B, H, nb, 1, dh).transpose(1, 2).reshape(B * nb, H, 1, dh)  # noqa
        kb, vb = torch.cat([kb, cls_kv(k)], 2), torch.cat([vb, cls_kv(v)], 2)  # (B * nb, H, W + 1, dh)
        allowed = torch.cat([allowed, cls_ok[..., None]], -1)  # (B, nb, block, W + 1)
    bias = additive_mask(allowed, q.dtype).reshape(B * nb, 1, block, -1)
    probs = None
    if need_received:
        probs = ((qb @ kb.transpose(-1, -2)) / math.sqrt(dh) + bias).softmax(-1)  # (B * nb, H, block, W[+1])
        ctx = F.dropout(probs, dropout_p) @ vb
    else:
        ctx = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=bias, dropout_p=dropout_p)
    ctx = ctx.view(B, nb, H, block, dh).transpose(1, 2).reshape(B, H, Lp, dh)[:, :, :L]
    flops = 4.0 * H * Lp * (W + int(global_cls)) * dh
    received = None
    if global_cls:  # [CLS] attends to everything: one dense query row
        cls_ctx, cls_recv, extra = _masked_attention(q[:, :, :1], k, v, mask[:, None, None, :], mask[:, :1], True,
                                                     dropout_p)
        ctx = torch.cat([cls_ctx, ctx[:, :, 1:]], 2)
        flops += 4.0 * H * L * dh + extra
    if need_received:
        real_q = F.pad(mask, (0, Lp - L), value=False).view(B, nb, 1, block, 1).to(probs.dtype)
        if global_cls:
            real_q = real_q.clone()
            real_q[:, 0, :, 0] = 0  # the [CLS] row was recomputed densely above
        p = probs.view(B, nb, H, block, -1) * real_q
        band_sum = p[..., :W].sum((2, 3))  # (B, nb, W)
        slot = (torch.arange(nb, device=q.device)[:, None] * block + torch.arange(W, device=q.device)[None, :])
        received = torch.zeros(B, Lp + 2 * half, dtype=probs.dtype, device=q.device)
        received.scatter_add_(1, slot.reshape(1, -1).expand(B, -1), band_sum.reshape(B, -1))
        received = received[:, half:half + L]
        if global_cls:
            received = received.clone()
            received[:, 0] += p[..., W].sum((1, 2, 3))
            received = received + cls_recv
    return ctx, received, flops


class SparseAttention(Mechanism):
    """Sliding-window + global-[CLS] attention. Falls back to dense attention when the window covers
    the whole sequence (identical results), and to the dense-masked kernel below `blocked_min_length`
    tokens, where dense sdpa beats the blocked kernel on CPU (field notes, section 7).
    `masked_reference` (mode=mask) always builds the dense L x L mask, as the reference does."""

    def __init__(self, cfg: SparseConfig, masked_reference: bool = False):
        super().__init__()
        self.cfg, self.half, self.masked_reference = cfg, cfg.window // 2, masked_reference

    def attention(self, layer: int, state: State) -> Optional[AttentionFn]:
        L, mask, half, g = state.length, state.mask, self.half, self.cfg.global_cls
        if L - 1 <= half and not self.masked_reference:
            return None  # the window sees everything: plain dense attention
        allowed = lambda: local_allowed(L, half, g, mask.device)[None, None] & mask[:, None, None, :]  # noqa: E731
        if self.masked_reference or L < self.cfg.blocked_min_length:
            return MaskedAttention(lambda q, k, v, need, p: masked_local_attention(q, k, v, mask, half, g, need, p),
                                   allowed, mask)
        # The blocked kernel has no L x L mask to hand over: fused runtimes refuse it at start-up
        # (RunConfig checks mechanism.sparse.blocked_min_length against task.max_length).
        block = self.cfg.block_size
        return lambda q, k, v, need, p: blocked_local_attention(q, k, v, mask, half, g, block, need, p)
