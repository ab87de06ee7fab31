"""Does the selection split's promise hold on dev? For every chosen operating point: its loss against static on
the selection split (written by eat.select into operating_point.yaml) next to its loss on the evaluation split
(the committed rows of eval.py or of the declared harness at that point). RESULTS section 3.6.

Rows: static = mechanism none on our encoder (not hf_static), bs=32, the most examples, latest; EAT = the latest
bs=32 row with operating_point_source=selection that covers as many examples as that static row.

    python experiments/table_selection_vs_dev.py \\
        --case sst2 'experiments/results/sst2_select/seed{seed}/operating_point.yaml' \\
        --case mnli 'experiments/results/mnli_offline_select/pairs_seed{seed}/operating_point.yaml' \\
        --results experiments/results/sst2_headline.csv --results experiments/results/mnli_offline.csv \\
        --results experiments/results/mnli_pairs_seeds.csv --seeds 42 43 44 --out experiments/report/selection_vs_dev.md
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

import yaml

from eat.tables import TableError, publish, read_results


def read(paths: List[str]) -> List[Dict[str, str]]:
    return read_results(paths, ("task", "seed", "model", "mechanism", "batch_size", "n_examples", "accuracy",
                                "operating_point_source", "timestamp"))


def dev_pair(rows: List[Dict[str, str]], task: str, seed: int) -> Optional[Dict[str, Dict[str, str]]]:
    mine = sorted((r for r in rows if r["task"] == task and r["seed"] == str(seed) and r["batch_size"] == "32"),
                  key=lambda r: r["timestamp"])
    static = [r for r in mine if r["mechanism"] == "none" and r["model"] != "hf_static"]
    if not static:
        return None
    n = max(int(r["n_examples"]) for r in static)
    static = [r for r in static if int(r["n_examples"]) == n][-1]
    eat = [r for r in mine if r["operating_point_source"] == "selection" and int(r["n_examples"]) == n]
    return {"static": static, "eat": eat[-1]} if eat else None


def build(cases: List[List[str]], rows: List[Dict[str, str]], seeds: List[int]) -> List[str]:
    out = ["| task | seed | chosen point | selection: rows | selection: Δ vs static | evaluation: rows "
           "| evaluation: Δ vs static | evaluation - selection |", "|---|---|---|---|---|---|---|---|"]
    gaps = []
    for task, pattern in cases:
        for seed in seeds:
            path = pattern.format(seed=seed)
            if not os.path.isfile(path):
                raise TableError(f"--case {task}: {path} not found")
            ch = yaml.safe_load(open(path))["chosen"]
            point = " ".join(o for o in ch["overrides"] if o.startswith("mechanism"))
            sel = 100 * (ch["score"] - ch["static_score"])
            pair = dev_pair(rows, task, seed)
            if pair is None:
                out.append(f"| {task} | {seed} | {point} | {ch['n_examples']} | {sel:+.2f} | not in --results | | |")
                continue
            n = int(pair["static"]["n_examples"])
            dev = 100 * (float(pair["eat"]["accuracy"]) - float(pair["static"]["accuracy"]))
            gaps.append((sel, dev))
            out.append(f"| {task} | {seed} | {point} | {ch['n_examples']} | {sel:+.2f} | {n} | {dev:+.2f} "
                       f"({round(dev * n / 100):+d} examples) | {dev - sel:+.2f} |")
    if not gaps:
        raise TableError("no chosen point has its evaluation rows in --results")
    worse = sum(d < s for s, d in gaps)
    out += ["", f"Mean over the {len(gaps)} points: selection {sum(s for s, _ in gaps) / len(gaps):+.2f}, evaluation "
            f"{sum(d for _, d in gaps) / len(gaps):+.2f} points; the evaluation loss is larger at {worse} of "
            f"{len(gaps)}."]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", nargs=2, action="append", required=True, metavar=("TASK", "OP_PATTERN"),
                    help="a task and its operating_point.yaml path with {seed}")
    ap.add_argument("--results", action="append", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    try:
        lines = build(a.case, read(a.results), a.seeds)
    except (TableError, KeyError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cmd = "python experiments/table_selection_vs_dev.py " + " ".join(sys.argv[1:] if argv is None else argv)
    publish(["# Chosen operating points: loss on the selection split vs on the evaluation split", "",
             f"Command: `{cmd}`", "", *lines], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
