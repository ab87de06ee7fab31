"""Long-sequence scaling: where sparse attention and pruning start to pay.

MiniLM-L6 shape (6 layers, hidden 384, 12 heads) with random weights and position embeddings extended to
the longest length; synthetic token ids; batch size 1; the same weights for every mechanism. Each cell is
the median over `--repeats` forwards, mechanisms interleaved per repeat.

    .venv/bin/python experiments/bench_long_sequences.py --out experiments/results/long_sequences.csv

On a GPU (`--device cuda`) the device is synchronised before each clock read.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from eat.long_sequences import encoder_config, mechanisms, synthetic_input
from eat.mechanisms import build_mechanisms
from eat.model.encoder import Encoder


def timed(fn, device: torch.device):
    """(result, milliseconds) of one call; waits for queued device work before each clock read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) * 1e3


def attention_kernels(lengths, window: int, repeats: int, device: torch.device):
    """The attention op alone (one layer, 12 heads x 32 dims, bs=1): dense sdpa vs the blocked local kernel."""
    from eat.mechanisms.attention import blocked_local_attention
    from eat.model.kernels import dense_attention

    rows = []
    for L in lengths:
        q, k, v = (torch.randn(1, 12, L, 32, device=device) for _ in range(3))
        mask = torch.ones(1, L, dtype=torch.bool, device=device)
        fns = {"attention:dense": lambda: dense_attention(q, k, v, mask),
               "attention:local": lambda: blocked_local_attention(q, k, v, mask, window // 2, True, 64)}
        times = {n: [] for n in fns}
        with torch.inference_mode():
            for f in fns.values():
                f()
            for _ in range(repeats * 3):
                for n, f in fns.items():
                    times[n].append(timed(f, device)[1])
        dense = statistics.median(times["attention:dense"])
        for n in fns:
            ms = statistics.median(times[n])
            rows.append({"length": L, "mechanism": n, "window": window, "ms_median": round(ms, 3),
                         "speedup_vs_dense": round(dense / ms, 3), "gflops": "", "gflops_static": "",
                         "tokens_final": L, "threads": torch.get_num_threads(), "repeats": repeats * 3,
                         "device": device.type})
            print(f"L={L:5d} {n:16s} {ms:9.2f} ms  x{dense / ms:5.2f} vs dense", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", default="128,256,512,1024,2048,4096")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="experiments/results/long_sequences.csv")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    lengths = [int(x) for x in a.lengths.split(",")]
    c = encoder_config(lengths)
    torch.manual_seed(0)
    base = Encoder(c).eval()
    models = {}
    for name, m in mechanisms(a.window).items():
        enc = Encoder(c, build_mechanisms(m, c)).eval()
        enc.load_state_dict(base.state_dict(), strict=False)
        models[name] = enc.to(device)

    rows = []
    for L in lengths:
        ids, mask = synthetic_input(L, c.vocab_size, device)
        times = {n: [] for n in models}
        with torch.inference_mode():
            for name, enc in models.items():  # warmup
                out = enc(ids, mask)
            for _ in range(a.repeats):
                for name, enc in models.items():
                    out, ms = timed(lambda: enc(ids, mask), device)
                    times[name].append(ms)
                    if len(times[name]) == 1:
                        times[name + ":stats"] = (float(out.flops[0]) / 1e9, float(out.static_flops[0]) / 1e9,
                                                  int(out.tokens_final[0]))
        dense = statistics.median(times["none"])
        for name in models:
            ms = statistics.median(times[name])
            g, gs, kept = times[name + ":stats"]
            rows.append({"length": L, "mechanism": name, "window": a.window, "ms_median": round(ms, 3),
                         "speedup_vs_dense": round(dense / ms, 3), "gflops": round(g, 4), "gflops_static": round(gs, 4),
                         "tokens_final": kept, "threads": torch.get_num_threads(), "repeats": a.repeats,
                         "device": device.type})
            print(f"L={L:5d} {name:13s} {ms:9.2f} ms  x{dense / ms:5.2f} vs dense  {g:7.2f} GFLOPs", flush=True)
    rows += attention_kernels(lengths, a.window, a.repeats, device)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
