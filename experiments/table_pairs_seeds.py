"""Issue 15's accuracy table over seeds (RESULTS section 3): for each offline pair task and seed, the static
fine-tune and EAT at the operating point chosen on the selection split, both evaluated by eval.py on the whole
evaluation split. Per task: each seed's scores, the mean ± std, the difference to static in points and in
examples (3 examples or fewer: "no measurable difference"), and the target (accuracy within --budget points,
QQP F1 within --f1-budget). Speed is not read here: it comes from the declared harness (bench_*_pairs.md).

Rows are matched by checkpoint folder: static = mechanism none on outputs/<task>_static_seed<S>, EAT = the rows
with operating_point_source=selection on outputs/<task>_eat_distill_seed<S> that cover as many examples as the
static row (eval.py, or the harness on the whole split); the latest row of each wins. `--eat eat_distill_pair`
reads the EAT rows of outputs/<task>_eat_distill_pair_seed<S> instead (pairs.sh HEADS=pair).

    python experiments/table_pairs_seeds.py --results experiments/results/mnli_pairs_seeds.csv \\
        --results experiments/results/qqp_pairs_seeds.csv --out experiments/report/pairs_seeds.md
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from typing import Dict, List, Tuple

from eat.tables import TableError, accuracy_delta_text, publish, read_results, table_head, table_row


def read(paths: List[str]) -> List[Dict[str, str]]:
    return read_results(paths, ("task", "seed", "accuracy", "f1", "n_examples", "ckpt_path", "mechanism",
                                "operating_point_source", "timestamp"))


def pick(rows: List[Dict[str, str]], eat: str = "eat_distill") -> Dict[Tuple[str, int], Dict[str, Dict[str, str]]]:
    """(task, seed) -> {"static": row, "eat": row}, the latest row of each kind; an EAT row counts only when it
    covers as many examples as the static row (a harness run on the first N examples is not the split)."""
    kinds: Dict[Tuple[str, int], Dict[str, List[Dict[str, str]]]] = {}
    for r in sorted(rows, key=lambda r: r["timestamp"]):
        folder = os.path.basename(os.path.dirname(os.path.dirname(r["ckpt_path"])))
        m = re.fullmatch(rf"(\w+?)_(static|{re.escape(eat)})_seed(\d+)", folder)
        if not m or m.group(1) != r["task"]:
            continue
        kind = "static" if m.group(2) == "static" else "eat"
        if kind == "static" and r["mechanism"] != "none":
            continue
        if kind == "eat" and r["operating_point_source"] != "selection":
            continue
        kinds.setdefault((r["task"], int(m.group(3))), {}).setdefault(kind, []).append(r)
    out: Dict[Tuple[str, int], Dict[str, Dict[str, str]]] = {}
    for key, got in kinds.items():
        out[key] = {}
        if "static" in got:
            out[key]["static"] = got["static"][-1]
            whole = [r for r in got.get("eat", []) if r["n_examples"] == got["static"][-1]["n_examples"]]
            if whole:
                out[key]["eat"] = whole[-1]
    return out


def build(rows: List[Dict[str, str]], budget: float, f1_budget: float, eat: str = "eat_distill") -> List[str]:
    by = pick(rows, eat)
    if not by:
        raise TableError("no row of a static checkpoint or of a selected EAT point (outputs/<task>_static_seedS, "
                         f"outputs/<task>_{eat}_seedS)")
    lines: List[str] = []
    for task in sorted({t for t, _ in by}):
        seeds = sorted(s for t, s in by if t == task and len(by[(t, s)]) == 2)
        if not seeds:  # said in the table, so one missing task does not hide the others
            lines += [f"### {task}: no seed has both a static row and an EAT row at a selected point on the whole "
                      "evaluation split", ""]
            continue
        pairs = [by[(task, s)] for s in seeds]
        n = int(pairs[0]["static"]["n_examples"])
        metrics = [("accuracy", budget)] + ([("f1", f1_budget)] if pairs[0]["static"]["f1"] else [])
        lines += [f"### {task} ({n} evaluation examples, seeds {', '.join(map(str, seeds))})", "",
                  *table_head(["metric", "static per seed", "EAT per seed", "static mean ± std", "EAT mean ± std",
                               "Δ (EAT - static)", "EAT's mechanism per seed", "target"])]
        for metric, allowed in metrics:
            st = [100 * float(p["static"][metric]) for p in pairs]
            ea = [100 * float(p["eat"][metric]) for p in pairs]
            delta = statistics.fmean(e - s for e, s in zip(ea, st))
            d_ex = [round((float(p["eat"]["accuracy"]) - float(p["static"]["accuracy"])) * n) for p in pairs]
            dtext = accuracy_delta_text(delta, d_ex) if metric == "accuracy" else f"{delta:+.2f} points"
            sd = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
            mech = "; ".join(p["eat"]["mechanism"] for p in pairs)
            verdict = "met" if round(delta, 2) >= -allowed else "missed"
            lines.append(table_row([metric, ", ".join(f"{x:.2f}" for x in st), ", ".join(f"{x:.2f}" for x in ea),
                                    f"{statistics.fmean(st):.2f} ± {sd(st):.2f}",
                                    f"{statistics.fmean(ea):.2f} ± {sd(ea):.2f}", dtext, mech,
                                    f"within {allowed} points: {verdict}"]))
        lines.append("")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", action="append", required=True, help="eval.py results CSV (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=0.5, help="accuracy target: at most this many points below static")
    p.add_argument("--f1-budget", type=float, default=1.0, help="F1 target (QQP): at most this many points below")
    p.add_argument("--eat", default="eat_distill", help="the EAT checkpoints' folder kind: outputs/<task>_EAT_seedS")
    a = p.parse_args(argv)
    try:
        lines = build(read(a.results), a.budget, a.f1_budget, a.eat)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = ["# Sentence pairs over seeds: static vs EAT at the selected operating point (eval.py, whole evaluation "
            "split)", "", "Command: `python experiments/table_pairs_seeds.py "
            + " ".join(f"--results {r}" for r in a.results) + (f" --eat {a.eat}" if a.eat != "eat_distill" else "")
            + f" --out {a.out}`", ""]
    publish(head + lines, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
