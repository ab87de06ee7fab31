"""Side-by-side inference benchmark of the 8 mechanisms (+ hf_static and the reference's mask mode) on one
trained checkpoint, full dev set, at each batch size. Configurations are interleaved within each repeat,
so machine drift hits all of them alike; the summary quotes medians over repeats.

    .venv/bin/python experiments/bench_mechanisms.py --ckpt PATH/best.ckpt --glue ../shared/data/glue \
        --results experiments/results/sst2_bench.csv --summary experiments/bench_mechanisms.md

The checkpoint must have exit heads (trained with an `exit` mechanism); the other mechanisms reuse its
backbone and final head. Extra Hydra overrides (e.g. mechanism.exit.threshold=0.8) go after `--`.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = [  # (label, overrides)
    ("none", ["mechanism=none"]),
    ("hf_static", ["mechanism=none", "peer=hf_static"]),
    ("prune", ["mechanism=prune"]),
    ("sparse", ["mechanism=sparse"]),
    ("exit", ["mechanism=exit"]),
    ("prune+sparse", ["mechanism=prune+sparse"]),
    ("prune+exit", ["mechanism=prune+exit"]),
    ("sparse+exit", ["mechanism=sparse+exit"]),
    ("prune+sparse+exit", ["mechanism=prune+sparse+exit"]),
    ("prune+sparse+exit (mask: reference)", ["mechanism=prune+sparse+exit", "mechanism.mode=mask"]),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    p.add_argument("--task", default="sst2")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bs1-examples", type=int, default=None,
                   help="time bs=1 on the first N examples of the split (default: all of it)")
    p.add_argument("--only", default=None, help="comma-separated labels to run (default: all)")
    p.add_argument("--add", nargs="+", action="append", default=[], metavar=("LABEL", "OVERRIDE"),
                   help="one more configuration: a label and its Hydra overrides, e.g. "
                        "--add keep0.9 mechanism=prune+sparse+exit 'mechanism.prune.keep_ratios=[0.9,0.9]'")
    p.add_argument("--results", default="experiments/results/sst2_bench.csv")
    p.add_argument("--summary", default="experiments/bench_mechanisms.md")
    p.add_argument("--out-dir", default="outputs/bench")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every configuration")
    a = p.parse_args(argv)

    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch
    from hydra import compose, initialize_config_dir

    from eat.config import register_configs
    from eat.runner import run

    register_configs()
    configs = [c for c in CONFIGS if a.only is None or c[0] in a.only.split(",")]
    configs += [(label, overrides) for label, *overrides in a.add]
    batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    lat, rows_by = defaultdict(list), {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for rep in range(a.repeats):
            for label, extra in configs:
                out_dir = Path(a.out_dir) / label.split(" ")[0] / f"rep{rep}"
                if "mask" in label:
                    out_dir = Path(a.out_dir) / "mask" / f"rep{rep}"
                for bs in batch_sizes:
                    # bs=1 may time a prefix of the split (its predictions equal bs=N's: batch invariance)
                    limit = [f"data.max_eval_samples={a.bs1_examples}"] if bs == 1 and a.bs1_examples else []
                    cfg = compose(config_name="eval", overrides=[
                        f"task={a.task}", f"ckpt_path={a.ckpt}", f"data.dir={a.glue}", f"results_csv={a.results}",
                        f"eval_batch_sizes=[{bs}]", f"output_dir={out_dir}", "logger=none",
                        "trainer.enable_progress_bar=false", "callbacks.latency.warmup_batches=5", *limit, *extra,
                        *a.overrides])
                    for row in run(cfg):
                        key = (label, row["split"], row["batch_size"])
                        lat[key].append(row["latency_ms_per_example"])
                        rows_by[key] = row
                print(f"[bench] repeat {rep + 1}/{a.repeats} {label} done", flush=True)

    gpu = any(r.get("device") == "cuda" for r in rows_by.values()) and torch.cuda.get_device_name(0)
    lines = [f"# Mechanism benchmark: {a.task}, checkpoint `{a.ckpt}`", "",
             (f"Device: {gpu} (CUDA). " if gpu else "")
             + f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads. Full evaluation split"
             + (f" (bs=1: its first {a.bs1_examples} examples)" if a.bs1_examples else "") + f"; median of {a.repeats} "
             "interleaved repeats; speed-up = static ms/example / ms/example, side by side in this one run.",
             f"Command: `python experiments/bench_mechanisms.py {' '.join(argv or sys.argv[1:])}`", ""]
    for bs in batch_sizes:
        n = next((r["n_examples"] for (_, _, b), r in rows_by.items() if b == bs), "?")
        lines += [f"## batch size {bs} ({n} examples)", "",
                  ("| mechanism | accuracy | ms/example (median) | speed-up vs none | avg exit layer | token retention "
                   "| FLOPs reduction | FLOPs realisation |"), "|---|---|---|---|---|---|---|---|"]
        for (label, split, b), values in lat.items():
            if b != bs:
                continue
            ms = statistics.median(values)
            base = statistics.median(lat[("none", split, bs)]) if ("none", split, bs) in lat else float("nan")
            r = rows_by[(label, split, b)]
            speed = base / ms
            fr = r.get("flops_reduction") or float("nan")
            lines.append(f"| {label} | {100 * r.get('accuracy', float('nan')):.2f} | {ms:.3f} | {speed:.2f}x | "
                         f"{r['avg_exit_layer']:.2f} | {r['avg_token_retention']:.3f} | {fr:.2f}x | {speed / fr:.2f} |")
        lines.append("")
    Path(a.summary).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
