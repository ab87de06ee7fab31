"""RESULTS 2f: each SST-2 mechanism combination trained on its own, CPU against GPU, as one markdown table.

    python experiments/table_trained_combos.py --cpu experiments/results/sst2_combos_cpu.csv \
        --static experiments/results/sst2.csv --gpu experiments/results/sst2_combos_cuda.csv --out table.md

The static model of the CPU column is the seed's `mechanism=none` row of `--static` (section 1's run; the
combinations multirun does not retrain it). All values are the batch-size-32 rows; accuracy, exit layer and
retention do not depend on the batch size (tested), FLOPs reduction does (padding).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import pandas as pd

from eat.tables import markdown_table

COMBOS = ["none", "prune", "sparse", "exit", "prune+sparse", "prune+exit", "sparse+exit", "prune+sparse+exit"]
# Results columns the table reads (a results CSV written by train.py / eval.py has them all).
NEEDED = ["mechanism", "mode", "seed", "batch_size", "accuracy", "avg_exit_layer", "avg_token_retention",
          "flops_reduction"]


def bs32(path: str, seed: int) -> pd.DataFrame:
    """One row per mechanism: the last bs=32, mode=compute row of `seed` in the results file."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such results file")
    df = pd.read_csv(path)
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (a results CSV written by train.py / eval.py has them)")
    df = df[(df["batch_size"] == 32) & (df["mode"] == "compute") & (df["seed"] == seed)]
    return df.drop_duplicates("mechanism", keep="last").set_index("mechanism")


def table(cpu: pd.DataFrame, static: pd.Series, gpu: pd.DataFrame) -> str:
    base = 100 * static["accuracy"]
    header = ["trained and evaluated with", "dev acc (CPU)", f"Δ vs static {base:.2f}", "avg exit layer",
              "token retention", "FLOPs reduction (bs=32)", "trained on the GPU (9c)"]
    rows = []
    for mech in COMBOS:
        gpu_acc = f"{100 * gpu.loc[mech, 'accuracy']:.2f}" if mech in gpu.index else "–"
        if mech == "none":
            r, label, delta = static, "none (static, section 1)", "–"
        elif mech in cpu.index:
            r, label = cpu.loc[mech], mech
            delta = f"{100 * r['accuracy'] - base:+.2f}"
        else:
            rows.append([mech, "(not run)", "", "", "", "", gpu_acc])
            continue
        rows.append([label, f"{100 * r['accuracy']:.2f}", delta, f"{r['avg_exit_layer']:.2f}",
                     f"{r['avg_token_retention']:.3f}", f"{r['flops_reduction']:.2f}x", gpu_acc])
    return markdown_table(header, rows) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", required=True, help="results CSV of the CPU-trained combinations")
    p.add_argument("--static", required=True, help="results CSV holding the static (mechanism=none) run")
    p.add_argument("--gpu", required=True, help="results CSV of the GPU-trained combinations")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", help="write the table here as well as to stdout")
    a = p.parse_args(argv)
    try:
        static, cpu, gpu = (bs32(path, a.seed) for path in (a.static, a.cpu, a.gpu))
        if "none" not in static.index:
            raise ValueError(f"{a.static} has no mechanism=none, mode=compute, batch_size=32 row for seed {a.seed}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(cpu, static.loc["none"], gpu)
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
