"""Per-layer exit-head tables (issue 15): where a pair task's accuracy goes, layer by layer.

Every exit head and the final head classify every example (exits switched off, as in training; pruning and the
window act as configured), on the task's evaluation split. Per head: accuracy, agreement with the final head,
mean confidence, and the share of examples confident enough to leave there at each threshold. Each configuration
is built by eval.py's path (eat.bench.build), so checkpoints, operating points and overrides mean the same.

    python experiments/exit_heads.py --common experiment=mnli_offline data.dir=../shared/data/glue \\
      --config plain ckpt_path=outputs/mnli_eat_seed42/checkpoints/best.ckpt \\
      --config distill ckpt_path=outputs/mnli_eat_distill_seed42/checkpoints/best.ckpt \\
      --out experiments/results/mnli_exit_heads.csv --summary experiments/mnli_exit_heads.md

`--frontier CSV` also writes each configuration's exit frontier under the confidence criterion, read off the same
head logits: per threshold, the accuracy and average exit layer the model would have with exits on (each row leaves
at its first head that is sure enough; exact, since a row's heads do not depend on whether others left). It is an
analysis of the evaluation split, not a way to choose a point: operating points come from eat.select.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import List, Optional

import torch

from eat.bench import build
from eat.calibration import exit_head_logits
from eat.config import ConfigError

THRESHOLDS = (0.8, 0.9, 0.95)
FRONTIER = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)


def frontier_rows(label: str, logits, labels: torch.Tensor) -> List[dict]:
    """Per threshold of FRONTIER: what exits under the confidence criterion would give (see the module doc)."""
    last = max(logits)
    final_pred = logits[last].argmax(-1)
    rows = []
    for t in FRONTIER:
        pred, exit_layer = final_pred.clone(), torch.full_like(final_pred, last + 1)
        left = torch.zeros_like(final_pred, dtype=torch.bool)
        for layer in sorted(k for k in logits if k != last):
            conf, p = logits[layer].float().softmax(-1).max(-1)
            now = ~left & (conf >= t)
            pred[now], exit_layer[now], left = p[now], layer + 1, left | now
        avg = float(exit_layer.float().mean())
        rows.append({"config": label, "threshold": t, "n_examples": len(labels),
                     "accuracy": round(float((pred == labels).float().mean()), 4),
                     "agree_with_final": round(float((pred == final_pred).float().mean()), 4),
                     "avg_exit_layer": round(avg, 3), "layers_saved": round((last + 1) / avg, 3)})
    return rows


def head_rows(label: str, overrides: List[str], max_examples: Optional[int], frontier: Optional[List[dict]] = None
              ) -> List[dict]:
    b = build(label, overrides)
    split = b.dm.eval_split_names[0]
    if "exit" not in b.module.encoder.mechanisms:
        raise ConfigError(f"--config {label}: the mechanism has no exit heads (mechanism={b.rc.mechanism.name})")
    n = max_examples or len(b.dm.splits[split])
    logits, labels = exit_head_logits(b.module.encoder, b.dm.head_dataloader(split, n), final=True)
    last = max(logits)
    final_pred = logits[last].argmax(-1)
    if frontier is not None:
        frontier += frontier_rows(label, logits, labels)
    rows = []
    for layer, z in sorted(logits.items()):
        conf, pred = z.float().softmax(-1).max(-1)
        row = {"config": label, "split": split, "n_examples": len(labels), "layer": layer + 1,
               "head": "final" if layer == last else "exit", "accuracy": round(float((pred == labels).float().mean()), 4),
               "agree_with_final": round(float((pred == final_pred).float().mean()), 4),
               "mean_confidence": round(float(conf.mean()), 4)}
        for t in THRESHOLDS:
            sure = conf >= t
            row[f"sure_at_{t}"] = round(float(sure.float().mean()), 4)
            row[f"accuracy_sure_at_{t}"] = round(float((pred == labels)[sure].float().mean()), 4) if sure.any() else ""
        rows.append(row)
    return rows


def markdown(rows: List[dict]) -> List[str]:
    cols = ["config", "layer", "head", "accuracy", "agree_with_final", "mean_confidence",
            *[f"sure_at_{t}" for t in THRESHOLDS], *[f"accuracy_sure_at_{t}" for t in THRESHOLDS]]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]]


def write_csv(path: str, rows: List[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:  # whole file or nothing
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--common", nargs="*", default=[], help="Hydra overrides given to every configuration")
    p.add_argument("--config", nargs="+", action="append", required=True, metavar=("LABEL", "OVERRIDE"),
                   help="a label, then eval.py overrides (repeatable)")
    p.add_argument("--max-examples", type=int, default=None, help="the first N evaluation examples (default all)")
    p.add_argument("--out", required=True, help="CSV to write (replaced)")
    p.add_argument("--summary", help="markdown table to write (replaced)")
    p.add_argument("--frontier", help="CSV of each configuration's exit frontier (replaced; see the module doc)")
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("EAT_THREADS", torch.get_num_threads())))
    try:
        front: Optional[List[dict]] = [] if a.frontier else None
        rows = [r for label, *ov in a.config for r in head_rows(label, [*a.common, *ov], a.max_examples, front)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_csv(a.out, rows)
    lines = markdown(rows)
    if front:
        write_csv(a.frontier, front)
        cols = list(front[0])
        lines += ["", f"Exit frontier under the confidence criterion (`--frontier {a.frontier}`):", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                  *["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in front]]
    if a.summary:
        with open(a.summary, "w") as f:
            f.write("\n".join(["# Per-layer exit heads", "", f"`python experiments/exit_heads.py "
                               f"{' '.join(argv)}`", "", *lines, ""]))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
