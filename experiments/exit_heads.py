"""Per-layer exit-head tables (issue 15): where a pair task's accuracy goes, layer by layer.

Every exit head and the final head classify every example (exits switched off, as in training; pruning and the
window act as configured), on the task's evaluation split. Per head: accuracy, agreement with the final head,
mean confidence, and the share of examples confident enough to leave there at each threshold. Each configuration
is built by eval.py's path (eat.bench.build), so checkpoints, operating points and overrides mean the same.

    python experiments/exit_heads.py --common experiment=mnli_offline data.dir=../shared/data/glue \\
      --config plain ckpt_path=outputs/mnli_eat_seed42/checkpoints/best.ckpt \\
      --config distill ckpt_path=outputs/mnli_eat_distill_seed42/checkpoints/best.ckpt \\
      --out experiments/results/mnli_exit_heads.csv --summary experiments/mnli_exit_heads.md
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


def head_rows(label: str, overrides: List[str], max_examples: Optional[int]) -> List[dict]:
    b = build(label, overrides)
    split = b.dm.eval_split_names[0]
    if "exit" not in b.module.encoder.mechanisms:
        raise ConfigError(f"--config {label}: the mechanism has no exit heads (mechanism={b.rc.mechanism.name})")
    n = max_examples or len(b.dm.splits[split])
    logits, labels = exit_head_logits(b.module.encoder, b.dm.head_dataloader(split, n), final=True)
    last = max(logits)
    final_pred = logits[last].argmax(-1)
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


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--common", nargs="*", default=[], help="Hydra overrides given to every configuration")
    p.add_argument("--config", nargs="+", action="append", required=True, metavar=("LABEL", "OVERRIDE"),
                   help="a label, then eval.py overrides (repeatable)")
    p.add_argument("--max-examples", type=int, default=None, help="the first N evaluation examples (default all)")
    p.add_argument("--out", required=True, help="CSV to write (replaced)")
    p.add_argument("--summary", help="markdown table to write (replaced)")
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("EAT_THREADS", torch.get_num_threads())))
    try:
        rows = [r for label, *ov in a.config for r in head_rows(label, [*a.common, *ov], a.max_examples)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out + ".tmp", "w", newline="") as f:  # whole file or nothing
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(a.out + ".tmp", a.out)
    lines = markdown(rows)
    if a.summary:
        with open(a.summary, "w") as f:
            f.write("\n".join(["# Per-layer exit heads", "", f"`python experiments/exit_heads.py "
                               f"{' '.join(argv)}`", "", *lines, ""]))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
