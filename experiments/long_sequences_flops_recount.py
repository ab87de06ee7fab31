"""Recount the FLOPs columns of a long-sequence results CSV with the current FLOPs accounting (no timing).

    .venv/bin/python experiments/long_sequences_flops_recount.py \
        experiments/results/long_sequences.csv experiments/results/long_sequences_cuda.csv \
        --out experiments/long_sequences_flops_recount.md

The committed CSVs of bench_long_sequences.py predate the count of the chunked received-attention pass (above
256 queries, pruning's attention criterion recomputes q k^T in chunks next to the fused sdpa kernel:
eat/mechanisms/attention.py). Their `gflops` column of the configurations with pruning therefore undercounts.
This script rebuilds the benchmark's models (same construction: eat.long_sequences, window of
the CSV) and runs one forward per length and pruning configuration, reading `Outputs.flops`; FLOPs depend on
the shapes only, not on the weights or token ids. Timings are not touched: the benchmark is not rerun.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from eat.long_sequences import encoder_config, mechanisms, synthetic_input
from eat.mechanisms import build_mechanisms
from eat.model.encoder import Encoder
from eat.tables import markdown_table, publish

RECOUNTED = ["prune", "prune+sparse"]  # the configurations that ask for the attention received


def recount(lengths, window: int):
    c = encoder_config(lengths)
    torch.manual_seed(0)
    models = {n: Encoder(c, build_mechanisms(m, c)).eval() for n, m in mechanisms(window).items() if n in RECOUNTED}
    out = {}
    for L in lengths:
        ids, mask = synthetic_input(L, c.vocab_size)
        for name, enc in models.items():
            with torch.inference_mode():
                o = enc(ids, mask)
            out[(L, name)] = (float(o.flops[0]) / 1e9, int(o.tokens_final[0]))
            print(f"L={L} {name}: {out[(L, name)][0]:.4f} GFLOPs", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+", help="results CSVs of bench_long_sequences.py")
    p.add_argument("--out", help="write the markdown table here as well as to stdout")
    a = p.parse_args(argv)
    frames = []
    for path in a.csv:
        df = pd.read_csv(path)
        df = df[df["mechanism"].isin(RECOUNTED)].assign(csv=Path(path).name)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    counts = {}
    for window, part in df.groupby("window"):
        counts.update({(window, *k): v for k, v in recount(sorted(set(part["length"])), int(window)).items()})
    rows = []
    for _, r in df.sort_values(["csv", "mechanism", "length"]).iterrows():
        g, kept = counts[(r["window"], r["length"], r["mechanism"])]
        under = 100 * (g - r["gflops"]) / g
        under = 0.0 if abs(under) < 0.05 else under  # the CSV keeps 4 decimals: no "-0.0%"
        rows.append([r["csv"], r["length"], r["mechanism"], f"{r['gflops']:.4f}", f"{g:.4f}", f"{under:.1f}%",
                     f"{r['tokens_final']} / {kept}"])
    header = ["results CSV", "L", "mechanism", "committed GFLOPs", "recounted GFLOPs", "committed undercounts by",
              "tokens_final (committed / recount)"]
    publish(["# Long-sequence FLOPs recounted with the chunked received-attention pass", "",
             markdown_table(header, rows)], a.out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
