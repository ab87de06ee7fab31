"""What one layer costs, from experiments/layer_cost.sh's run: a least-squares line T(K) = F + K L through the
first-K-layer models' times (one run of the declared harness, per seed and batch size), and what it allows an EAT.

speedup_bound.py fits the same line through two points (the full and the truncated peer of a runtimes.sh run); here
every depth K was timed, so the line is checked, not assumed (the residuals are printed). For each EAT depth d given
(--depths: average exit layers), its matched-cost peer has k = ceil(d) layers, and an EAT that runs d layers with no
overhead at all (its exit heads free, no pruning) takes F + d L, so

    bound = T(k) / (F + d L)        (T(k): the k-layer model's measured time),
    1.5x needs e <= (T(k) / 1.5 - F) / L layers of work.

    python experiments/layer_cost_fit.py --results experiments/results/mnli_layer_cost.csv \
        --out experiments/report/mnli_layer_cost/fit.md --depths 4.26
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

from eat.tables import TableError, publish, read_harness_results, table_head, table_row

NEED = ["model", "seed", "batch_size", "num_layers", "latency_ms_per_example", "speedup", "speedup_min", "speedup_max"]


def line(points: Sequence[Tuple[int, float]]) -> Tuple[float, float]:
    """(F, L) of the least-squares line t = F + K L through (K, t) points."""
    n = len(points)
    mk, mt = sum(k for k, _ in points) / n, sum(t for _, t in points) / n
    L = sum((k - mk) * (t - mt) for k, t in points) / sum((k - mk) ** 2 for k, _ in points)
    return mt - L * mk, L


def build(path: str, rows: List[Dict[str, str]], model: str, depths: List[float], target: float) -> List[str]:
    by = defaultdict(dict)  # (seed, bs) -> K -> row
    for i, r in enumerate(rows):
        if r["model"] != model:
            continue
        key, k = (int(r["seed"]), int(r["batch_size"])), int(r["num_layers"])
        if k in by[key]:
            raise TableError(f"{path}:{i + 2}: seed {key[0]} bs={key[1]} has K = {k} twice (a rerun appended to the "
                             "same file? give each run its own: RUN=NAME bash experiments/layer_cost.sh)")
        by[key][k] = r
    if not by:
        raise TableError(f"{path}: no rows of model {model!r}; models: {sorted({r['model'] for r in rows})}")
    out = []
    for (seed, bs), got in sorted(by.items()):
        if len(got) < 2:
            raise TableError(f"{path}: seed {seed} bs={bs}: {model!r} at one depth only (K = {sorted(got)}); "
                             "a line needs two or more")
        t = {k: float(r["latency_ms_per_example"]) for k, r in got.items()}
        F, L = line(sorted(t.items()))
        out += [f"### seed {seed}, batch size {bs}: L = {L:.3f} ms per layer, F = {F:.3f} ms", "",
                *table_head(["K (layers)", "ms/example", "x HF fp32 [per-pass range]", "F + K L", "residual"])]
        for k in sorted(t, reverse=True):
            r = got[k]
            out.append(table_row([k, f"{t[k]:.3f}", f"{float(r['speedup']):.2f}x [{float(r['speedup_min']):.2f}-"
                                  f"{float(r['speedup_max']):.2f}]", f"{F + k * L:.3f}", f"{t[k] - F - k * L:+.3f}"]))
        out.append("")
        if depths:
            out += table_head(["EAT depth d", "matched peer k = ceil(d)", "T(k) ms", "zero-overhead EAT F + d L ms",
                               "bound x vs the peer", f"e for {target}x (layers of work)"])
            for d in depths:
                k = math.ceil(d)
                if k not in t:
                    raise TableError(f"{path}: seed {seed} bs={bs}: depth {d} needs the {k}-layer model; "
                                     f"timed: K = {sorted(t)}")
                out.append(table_row([f"{d:.2f}", k, f"{t[k]:.3f}", f"{F + d * L:.3f}", f"{t[k] / (F + d * L):.2f}x",
                                      f"{(t[k] / target - F) / L:.2f}"]))
            out.append("")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="a results CSV of experiments/layer_cost.sh")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="ort_int8_opt", help="the runtime (peer) whose layers were timed")
    p.add_argument("--depths", default="", help="comma-separated EAT average exit depths to bound, e.g. 2.87,3.27")
    p.add_argument("--target", type=float, default=1.5)
    a = p.parse_args(argv)
    try:
        depths = [float(d) for d in a.depths.split(",") if d]
        bad = [d for d in depths if not 0 < d <= 6]
        if bad:
            raise TableError(f"--depths {a.depths}: {bad[0]} is not an average exit layer (0 < d <= 6)")
        rows = read_harness_results(a.results, NEED)
        lines = build(a.results, rows, a.model, depths, a.target)
    except (TableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = [f"# What a layer costs: `{os.path.relpath(a.results)}` ({a.model})", "",
            f"Command: `python experiments/layer_cost_fit.py --results {a.results} --out {a.out} --model {a.model}"
            + (f" --depths {a.depths}" if a.depths else "") + "`", "",
            "T(K) = F + K L, least squares through every depth K timed in one run of the harness (the residual: "
            "measured minus the line). Bound: T(ceil(d)) / (F + d L), an EAT at average depth d with no overhead "
            f"at all against its matched-cost peer; `e for {a.target}x`: the layers of work a forward may do to be "
            f"{a.target}x faster than that peer.", ""]
    publish(head + lines, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
