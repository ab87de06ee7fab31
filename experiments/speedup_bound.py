"""How fast could EAT be against the truncated static peer? A bound from one run of the declared harness (issue 14).

The truncated peer is the first k layers fine-tuned as a plain classifier, k = ceil(EAT's average exit depth), run
as a user would deploy it (whole HF graph, ORT INT8). The same harness run also times the full 6-layer model in the
same runtime (`ort_int8`). From the two, per seed and batch size, a forward of that runtime costs about

    T(k) = F + k * L        (F: embeddings, classifier, session call; L: one layer)

A forward of EAT that does `e` layers' worth of work (e = 6 * its FLOPs / the static model's FLOPs: exits and kept
tokens, exit heads included) and nothing else, at the peer's own per-layer cost, takes F + e * L. So no EAT
runtime built from the same layer kernels beats the peer by more than

    bound = T(k) / (F + e * L),        and 1.5x needs e <= (T(k) / 1.5 - F) / L.

Assumptions, both generous to EAT at bs=1: a layer's cost shrinks with its FLOPs (at bs=1 much of it is per-op
overhead that does not), and the exit decisions and branches cost nothing. EAT's own static whole graph runs as fast
as the HF export in ORT INT8 (experiments/runtimes_tried.md), so its layers are not cheaper than the peer's. At bs=32
the padding each batch carries makes the two-point fit a poor model (EAT re-pads its remaining rows after every
exit), and a measured ratio may exceed it: the script prints the fit there for reference only.

    python experiments/speedup_bound.py --results experiments/results/sst2_runtimes_confidence0.8_whole.csv \
        --out experiments/report/sst2_speedup_bound.md
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections import defaultdict
from typing import Dict, List

from eat.tables import TableError, publish, read_harness_results, table_head, table_row

NEED = ["output_dir", "seed", "batch_size", "latency_ms_per_example", "avg_exit_layer", "num_layers",
        "gflops_per_example", "gflops_static_per_example"]


def label(r: Dict[str, str]) -> str:
    return os.path.basename(r["output_dir"].rstrip("/"))


def fit(full: Dict[str, str], trunc: Dict[str, str]):
    """(F, L) of T(k) = F + k L through the full model's and the truncated model's times."""
    n, k = int(full["num_layers"]), int(float(trunc["avg_exit_layer"]))
    if n <= k:
        raise TableError(f"the full model ({n} layers) must be deeper than the truncated one ({k})")
    t_n, t_k = float(full["latency_ms_per_example"]), float(trunc["latency_ms_per_example"])
    L = (t_n - t_k) / (n - k)
    return t_k - k * L, L


def build(rows: List[Dict[str, str]], full: str, trunc_label: str, configs: List[str], target: float) -> List[str]:
    by = defaultdict(dict)  # (bs, seed) -> label -> row
    trunc = trunc_label.replace("{k}", "K")  # the column names; each seed's own label below
    for r in rows:
        by[(int(r["batch_size"]), int(r["seed"]))][label(r)] = r
    out = []
    for bs in sorted({b for b, _ in by}):
        out += [f"### batch size {bs}" + ("" if bs == 1 else " (the fit is not a bound here: see the docstring)"), "",
                *table_head(["seed", f"{full} ms/ex", f"{trunc} ms/ex", "F ms", "L ms/layer", "configuration",
                             "exit layer", "e (layers of work)", "ms/ex", f"measured x vs {trunc}",
                             f"bound x vs {trunc}", f"e for {target}x", f"best possible with k = ceil(d), any d"])]
        for seed in sorted(s for b, s in by if b == bs):
            got = by[(bs, seed)]
            peer = trunc
            if "{k}" in trunc_label and configs[0] in got:  # each seed's matched peer: k = ceil(EAT's exit depth)
                peer = trunc_label.format(k=math.ceil(float(got[configs[0]]["avg_exit_layer"])))
            for lb in (full, peer):
                if lb not in got:
                    raise TableError(f"bs={bs} seed={seed}: no row labelled {lb!r}; labels: {sorted(got)}")
            F, L = fit(got[full], got[peer])
            t_k = float(got[peer]["latency_ms_per_example"])
            k = int(float(got[peer]["avg_exit_layer"]))
            e_need = (t_k / target - F) / L
            # the best a zero-overhead EAT could do against its own matched peer, over every depth d with no
            # pruning: (F + ceil(d) L) / (F + d L) is largest just above d = 1
            best = max((F + math.ceil(d) * L) / (F + d * L) for d in (1 + i / 100 for i in range(1, 500)))
            for c in configs:
                if c not in got:
                    raise TableError(f"bs={bs} seed={seed}: no row labelled {c!r}; labels: {sorted(got)}")
                r = got[c]
                e = int(r["num_layers"]) * float(r["gflops_per_example"]) / float(r["gflops_static_per_example"])
                t = float(r["latency_ms_per_example"])
                d = float(r["avg_exit_layer"])
                note = "" if math.ceil(d) == k else f" (ceil(d) = {math.ceil(d)}, peer has {k})"
                out.append(table_row([str(seed), f"{float(got[full]['latency_ms_per_example']):.3f}",
                                      f"{t_k:.3f}" + (f" (k = {k})" if peer != trunc else ""),
                                      f"{F:.3f}", f"{L:.3f}", c, f"{d:.2f}{note}", f"{e:.2f}", f"{t:.3f}",
                                      f"{t_k / t:.2f}x", f"{t_k / (F + e * L):.2f}x", f"{e_need:.2f}",
                                      f"{best:.2f}x"]))
        out.append("")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--full", default="ort_int8", help="label of the full static model in the peer's runtime")
    p.add_argument("--truncated", default="truncated_k4_ort_int8",
                   help="label of the truncated peer; with {k} (truncated_k{k}_ort_int8) each seed's matched peer, "
                   "k = ceil(the first of --configs' average exit layer)")
    p.add_argument("--configs", default="eat_ort_int8_whole,eat_ort_int8_whole_tensor",
                   help="comma-separated EAT labels to bound")
    p.add_argument("--target", type=float, default=1.5)
    a = p.parse_args(argv)
    try:
        rows = read_harness_results(a.results, NEED)
        lines = build(rows, a.full, a.truncated, [c for c in a.configs.split(",") if c], a.target)
    except (TableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = [f"# Speed-up bound against `{a.truncated}`: `{os.path.relpath(a.results)}`", "",
            f"Command: `python experiments/speedup_bound.py --results {a.results} --out {a.out} --full {a.full} "
            f"--truncated {a.truncated} --configs {a.configs}`", "",
            "T(k) = F + k L fitted per seed and batch size through the full model's and the truncated peer's times "
            "(same runtime, same run of the harness); e = 6 x EAT's FLOPs / static FLOPs; bound = T(k) / (F + e L): "
            f"an EAT with no overhead at all. `e for {a.target}x`: the layers of work a forward may do to be "
            f"{a.target}x faster than the peer. Last column: (F + ceil(d) L) / (F + d L) maximised over d, no pruning "
            "(the peer of an EAT at depth d has ceil(d) layers).", ""]
    publish(head + lines, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
