"""Per-batch inference timing on test/predict, done right on CPU and CUDA.

The clock is read in `on_test_batch_start` / `on_test_batch_end`, which bracket the whole `test_step`
(the forward plus cheap bookkeeping). On CUDA the device is synchronised before each read, because
Lightning calls `on_test_batch_start` after the batch was moved and kernels run asynchronously.
"""
from __future__ import annotations

import csv
import os
import statistics
import time
from typing import Dict, List, Optional

import lightning.pytorch as pl
import torch


def percentile(values: List[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


class LatencyCallback(pl.Callback):
    def __init__(self, warmup_batches: int = 2, csv_name: Optional[str] = "latency_batches"):
        super().__init__()
        self.warmup_batches, self.csv_name = warmup_batches, csv_name
        self.rows: List[Dict] = []
        self._t0 = 0.0

    @staticmethod
    def _sync(pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_test_start(self, trainer, pl_module) -> None:
        self.rows = []

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._sync(pl_module)
        ms = (time.perf_counter() - self._t0) * 1e3
        self.rows.append({"dataloader_idx": dataloader_idx, "batch_idx": batch_idx,
                          "batch_size": int(batch["input_ids"].shape[0]),
                          "tokens": int(batch["attention_mask"].sum()), "padded_length": int(batch["input_ids"].shape[1]),
                          "ms": ms, "warmup": batch_idx < self.warmup_batches})

    def summary(self, dataloader_idx: int = 0) -> Dict[str, float]:
        """Latency per batch (mean, p50, p90, p99), per example, and throughput; warmup batches excluded."""
        timed = [r for r in self.rows if r["dataloader_idx"] == dataloader_idx and not r["warmup"]]
        if not timed:
            return {}
        ms = [r["ms"] for r in timed]
        n = sum(r["batch_size"] for r in timed)
        return {"latency_ms_mean": statistics.fmean(ms), "latency_ms_p50": percentile(ms, 50),
                "latency_ms_p90": percentile(ms, 90), "latency_ms_p99": percentile(ms, 99),
                "latency_ms_per_example": sum(ms) / n, "throughput_eps": n / (sum(ms) / 1e3),
                "timed_batches": len(timed), "timed_examples": n, "latency_warning": latency_warning(ms)}

    def write_csv(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["dataloader_idx", "batch_idx", "batch_size", "tokens",
                                              "padded_length", "ms", "warmup"], lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)


# A p99 this far above the median means some batches stalled (other jobs, too many threads on a busy CPU):
# the mean and the throughput are then unreliable; the median still is.
TAIL_RATIO = 5.0
WARMUP_RATIO = 2.0  # the first timed batches this much slower than the median: warm-up was too short


def latency_warning(ms: List[float]) -> str:
    """Why these timings may not be trusted ("" when nothing looks wrong)."""
    if not ms:
        return ""
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    out = []
    if p99 > TAIL_RATIO * p50:
        out.append(f"p99 {p99:.1f} ms > {TAIL_RATIO:g}x p50 {p50:.1f} ms: stalled batches (busy machine? "
                   f"set threads= to fewer threads than free cores)")
    head = ms[:max(1, min(5, len(ms) // 10))]
    if len(ms) >= 4 and statistics.median(head) > WARMUP_RATIO * p50:
        out.append(f"warm-up too short: the first {len(head)} timed batches took {statistics.median(head) / p50:.1f}x "
                   f"the median (raise callbacks.latency.warmup_batches)")
    return "; ".join(out)
