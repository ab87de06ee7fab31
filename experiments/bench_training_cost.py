"""Training cost of each mechanism vs the static model: seconds per optimiser step in the real Lightning
fit loop (forward, joint loss, backward, AdamW step), on the same training batches, side by side.

    .venv/bin/python experiments/bench_training_cost.py --glue ../shared/data/glue \
        --results experiments/results/training_cost.csv --summary experiments/bench_training_cost.md

Each configuration is trained from the same pretrained weights for `--steps` steps, `--repeats` times,
interleaved (none, X, none, X, ...), so machine drift hits all of them alike. The first `--warmup` steps of
each fit are not timed. The per-epoch estimate is median s/step x steps in one epoch of the task.
This is joint training (every parameter trainable, the exit heads' loss summed with the final one), the
expensive case; the two-stage recipe (`experiment=eat_stage2`) trains only the heads.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(pl.Callback):
    """Wall time of each training step (the whole `training_step` + backward + optimiser step)."""

    def __init__(self):
        self.times, self._t0 = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    p.add_argument("--task", default="sst2")
    p.add_argument("--mechanisms", default="none,prune+sparse+exit")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per fit")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each fit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results", default="experiments/results/training_cost.csv")
    p.add_argument("--summary", default="experiments/bench_training_cost.md")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every configuration")
    a = p.parse_args(argv)
    if a.steps <= a.warmup:
        p.error(f"--steps={a.steps} must exceed --warmup={a.warmup}")

    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    from eat.build import build_module, build_trainer, check_against_model, compose, load_tokenizer
    from eat.config import to_run_config
    from eat.data.glue import GLUEDataModule

    mechanisms = a.mechanisms.split(",")
    step_s = {m: [] for m in mechanisms}
    steps_per_epoch = {}
    for rep in range(a.repeats):
        for mech in mechanisms:
            cfg = compose([f"task={a.task}", f"mechanism={mech}", f"data.dir={a.glue}", "logger=none",
                           "output_dir=outputs/bench_training_cost", f"trainer.max_steps={a.steps}",
                           "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
                           "trainer.devices=1", "trainer.enable_progress_bar=false", *a.overrides],
                          config_name="train")
            rc = to_run_config(cfg)
            check_against_model(rc)
            pl.seed_everything(rc.seed, workers=True, verbose=False)  # same batches for every config
            tok = load_tokenizer(rc.model)
            dm = GLUEDataModule(rc.task, rc.data, tok, rc.seed)
            module = build_module(rc, tok, dm.eval_split_names)
            timer = StepTimer()
            trainer = build_trainer(rc, logger=False, callbacks=[timer], enable_checkpointing=False)
            trainer.fit(module, datamodule=dm)
            steps_per_epoch[mech] = len(dm.train_dataloader())
            step_s[mech].extend(timer.times[a.warmup:])
            print(f"[train-cost] repeat {rep + 1}/{a.repeats} {mech}: "
                  f"median {statistics.median(timer.times[a.warmup:]):.3f} s/step", flush=True)

    base = statistics.median(step_s[mechanisms[0]])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    command = "python experiments/bench_training_cost.py " + " ".join(argv or sys.argv[1:])
    rows = []
    for mech in mechanisms:
        times = sorted(step_s[mech])
        med = statistics.median(times)
        rows.append({"task": a.task, "mechanism": mech, "steps_timed": len(times), "s_per_step_median": round(med, 4),
                     "s_per_step_p90": round(times[int(0.9 * (len(times) - 1))], 4),
                     "steps_per_epoch": steps_per_epoch[mech],
                     "epoch_min_estimate": round(med * steps_per_epoch[mech] / 60, 2),
                     "cost_vs_first": round(med / base, 3), "fits": f"{a.repeats}x{a.steps} ({a.warmup} untimed)",
                     "machine": machine, "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "command": command})
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(render(a.results, a.summary))
    return 0


def render(results_csv: str, summary: str) -> str:
    """The markdown table of a results CSV written by this script (`make report` calls this)."""
    with open(results_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    from eat.tables import markdown_table

    r0 = rows[0]
    lines = [f"# Training cost per step: {r0['task']}", "",
             (f"Machine: {r0['machine']}, torch {r0['torch']}, {r0['threads']} threads. Real Lightning fit loop "
              f"(joint training: every parameter trainable), same batches for every configuration; interleaved "
              f"fits: {r0['fits']}."), f"Command: `{r0['command']}`", ""]
    header = ["mechanism", "s/step (median)", "s/step (p90)", "epoch estimate (min)", f"cost vs {r0['mechanism']}"]
    lines.append(markdown_table(header, [[r["mechanism"], f"{float(r['s_per_step_median']):.3f}",
                                          f"{float(r['s_per_step_p90']):.3f}", r["epoch_min_estimate"],
                                          f"{float(r['cost_vs_first']):.2f}x"] for r in rows]))
    text = "\n".join(lines) + "\n"
    Path(summary).parent.mkdir(parents=True, exist_ok=True)
    Path(summary).write_text(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--render":  # --render RESULTS.csv SUMMARY.md: no measuring
        print(render(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
