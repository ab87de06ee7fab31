"""Per-example exits against the static-depth family at matched accuracy (experiments/depth_frontier.sh): from one
run of the declared harness per seed, per batch size,
  1. both frontiers: every K-layer static model (truncated_kK_ort_int8_opt; ort_int8_opt is K = 6) and every EAT
     point, by cost, with dev accuracy, layers run and ms/example, and for each static model the fastest EAT point
     that is at least as accurate on dev and faster (it is then dominated: no reason to deploy it);
  2. matched accuracy: each eat_match_kK (chosen on the selection split to be at least as accurate as the K-layer
     model there; eat_match_kK_VARIANT: the same point in another runtime) against that model: the dev accuracy difference (3 examples or fewer: no measurable difference)
     and EAT's speed-up over it, seed by seed, within one run.
Speed-ups between two configurations are ratios of their median per-pass speed-ups over the run's baseline, as in
table_headline.py. Optionally a figure (accuracy against ms/example).

    python experiments/table_depth_frontier.py --results experiments/results/sst2_depth_frontier.csv \
        --out experiments/report/sst2_depth_frontier/frontier.md [--figure .../frontier.png]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from eat.tables import TableError, accuracy_delta_text, publish, read_harness_results, table_head, table_row

STATIC = re.compile(r"^truncated_k([1-5])_ort_int8_opt$")
FULL = "ort_int8_opt"  # the full static model (K = 6) in the same runtime
MATCH = re.compile(r"^eat_match_k([1-5])(_\w+)?$")  # eat_match_kK, or a variant of it (eat_match_kK_tensor)


def label(r: Dict[str, str]) -> str:
    return os.path.basename(r["output_dir"].rstrip("/")) or r["mechanism"]


def static_depth(lb: str) -> Optional[int]:
    m = STATIC.match(lb)
    return int(m.group(1)) if m else (6 if lb == FULL else None)


def read(path: str) -> Dict[Tuple[int, str], Dict[int, Dict[str, str]]]:
    """(batch size, label) -> seed -> row; one row per seed and label (a rerun of a seed: its last row)."""
    rows = read_harness_results(path, ["speedup", "speedup_min", "speedup_max", "speedup_vs", "output_dir", "seed",
                                       "batch_size", "accuracy", "n_examples", "avg_exit_layer",
                                       "latency_ms_per_example"])
    by: Dict[Tuple[int, str], Dict[int, Dict[str, str]]] = defaultdict(dict)
    for r in rows:
        by[(int(r["batch_size"]), label(r))][int(r["seed"])] = r
    for bs in {b for b, _ in by}:
        labels = [lb for b, lb in by if b == bs]
        if FULL not in labels or not any(static_depth(lb) for lb in labels) or not any(lb.startswith("eat") for lb in labels):
            raise TableError(f"{path}: bs={bs} needs the full static model ({FULL}), at least one truncated_kK_ort_int8_opt"
                             f" and at least one eat* configuration; labels: {sorted(labels)}")
    return by


def _mean(per: Dict[int, Dict[str, str]], col: str, seeds: List[int]) -> float:
    return statistics.fmean(float(per[s][col]) for s in seeds)


def build(by: Dict[Tuple[int, str], Dict[int, Dict[str, str]]]) -> List[str]:
    out: List[str] = []
    for bs in sorted({b for b, _ in by}):
        labels = [lb for b, lb in by if b == bs]
        seeds = sorted(by[(bs, FULL)])
        n = int(by[(bs, FULL)][seeds[0]]["n_examples"])
        base = by[(bs, FULL)][seeds[0]]["speedup_vs"]

        def common(lb: str) -> List[int]:
            return [s for s in seeds if s in by[(bs, lb)]]

        def acc(lb: str) -> float:
            return 100 * _mean(by[(bs, lb)], "accuracy", common(lb))

        def ms(lb: str) -> float:
            return statistics.median(float(by[(bs, lb)][s]["latency_ms_per_example"]) for s in common(lb))

        def speed(lb: str, s: int) -> float:
            return float(by[(bs, lb)][s]["speedup"])

        def x_over(lb: str, peer: str) -> List[float]:  # seed by seed, within one run
            return [speed(lb, s) / speed(peer, s) for s in common(lb) if s in by[(bs, peer)]]

        statics = sorted((lb for lb in labels if static_depth(lb)), key=static_depth)
        eats = sorted((lb for lb in labels if lb.startswith("eat")), key=ms)
        out += [f"### batch size {bs} ({n} examples, seeds {', '.join(map(str, seeds))}; speed-ups over {base})", "",
                "Both frontiers, by cost:", "",
                *table_head(["configuration", "family", "dev accuracy", "layers run", "ms/example",
                             f"speed-up over {base}, median [per-pass min-max]", f"x vs {FULL}",
                             "dominated by (at least as accurate on dev, faster)"])]
        for lb in sorted(statics + eats, key=ms):
            per = by[(bs, lb)]
            k = static_depth(lb)
            fam = (f"static, {k} layer" + "s" * (k > 1)) if k else "EAT"
            dom = ""
            if k:
                better = [e for e in eats if acc(e) >= acc(lb) - 1e-9 and ms(e) < ms(lb)]
                dom = min(better, key=ms) if better else "none"
            sp = "; ".join(f"{speed(lb, s):.2f}x [{float(per[s]['speedup_min']):.2f}-{float(per[s]['speedup_max']):.2f}]"
                           for s in common(lb))
            vs = " / ".join(f"{x:.2f}x" for x in x_over(lb, FULL))
            out.append(table_row([lb, fam, f"{acc(lb):.2f}", f"{_mean(per, 'avg_exit_layer', common(lb)):.2f}",
                                  f"{ms(lb):.3f}", sp, vs, dom]))
        out += ["", "Matched accuracy: each EAT point chosen on the selection split to be at least as accurate as the "
                "K-layer model there, against that model on dev:", "",
                *table_head(["K", "K-layer model: dev accuracy", "EAT point: dev accuracy", "Δ EAT - K-layer",
                             "EAT layers run", "ms/example (K-layer / EAT)", "EAT speed-up over it, per seed",
                             "EAT point"])]
        for lb in sorted((lb for lb in eats if MATCH.match(lb)), key=lambda x: (int(MATCH.match(x).group(1)), x)):
            k = int(MATCH.match(lb).group(1))
            peer = f"truncated_k{k}_ort_int8_opt"
            if (bs, peer) not in by:
                raise TableError(f"{lb}: its K-layer model {peer} has no rows at bs={bs}")
            both = [s for s in common(lb) if s in by[(bs, peer)]]
            d = [100 * (float(by[(bs, lb)][s]["accuracy"]) - float(by[(bs, peer)][s]["accuracy"])) for s in both]
            d_ex = [round(x / 100 * n) for x in d]
            out.append(table_row([k, f"{acc(peer):.2f}", f"{acc(lb):.2f}", accuracy_delta_text(statistics.fmean(d), d_ex),
                                  f"{_mean(by[(bs, lb)], 'avg_exit_layer', both):.2f}", f"{ms(peer):.3f} / {ms(lb):.3f}",
                                  " / ".join(f"{x:.2f}x" for x in x_over(lb, peer)), lb]))
        out.append("")
    return out


def figure(by, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({b for b, _ in by})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    for ax, bs in zip(axes[0], sizes):
        labels = [lb for b, lb in by if b == bs]
        for fam, pick, style in (("static K layers (ORT INT8 opt)", static_depth, "s-"),
                                 ("EAT points (each in its runtime)", lambda x: x.startswith("eat"), "o")):
            pts = []
            for lb in labels:
                if not pick(lb):
                    continue
                per = by[(bs, lb)]
                pts.append((statistics.median(float(r["latency_ms_per_example"]) for r in per.values()),
                            100 * statistics.fmean(float(r["accuracy"]) for r in per.values()), lb))
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=fam)
            for i, (x, y, lb) in enumerate(pts):
                k = static_depth(lb)
                # EAT labels alternate below / above: two points of one setting can sit on top of each other
                ax.annotate(f"K={k}" if k else lb.replace("eat_", ""), (x, y), fontsize=7,
                            textcoords="offset points", xytext=(3, -9 if k or i % 2 == 0 else 5))
        ax.set_xlabel("ms per example (median)")
        ax.set_ylabel("dev accuracy (%)")
        ax.set_title(f"SST-2 dev, batch size {bs}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--figure", default=None, help="also draw accuracy against ms/example here (PNG)")
    a = p.parse_args(argv)
    try:
        by = read(a.results)
        lines = build(by)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = [f"# Exits against the static-depth family: `{os.path.relpath(a.results)}` (declared harness, eat.bench)", "",
            f"Command: `python experiments/table_depth_frontier.py --results {a.results} --out {a.out}"
            + (f" --figure {a.figure}" if a.figure else "") + "`", ""]
    publish(head + lines, a.out)
    if a.figure:
        figure(by, a.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
