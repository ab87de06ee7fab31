"""Configurations timed against each other batch by batch, on one checkpoint: each dev batch goes through
every model back to back (the order rotating), so machine drift, which moves whole benchmark runs by 10-20%
on a shared VM, hits them all alike. No Lightning loop: the forwards only. The first configuration is the
baseline of the speed-ups.

    .venv/bin/python experiments/bench_interleaved.py --ckpt outputs/sst2_eat_seed42/checkpoints/best.ckpt \\
        --batch-size 32 --config ours mechanism=none --config hf_static mechanism=none peer=hf_static

Each --config is a label and its Hydra overrides (as for eval.py); exit temperatures are fitted first when
a configuration sets mechanism.exit.calibration_split. --out appends the command and the results to a file.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(overrides, a):
    """(module ready for inference, data module) for one configuration, built the way eval.py builds it."""
    from hydra import compose, initialize_config_dir

    from eat.config import to_run_config
    from eat.data.glue import GLUEDataModule
    from eat.model.build import load_tokenizer
    from eat.runner import build_module, load_checkpoint_weights, prepare_for_eval

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"task={a.task}", f"data.dir={a.glue}", f"ckpt_path={a.ckpt}",
                                                     "output_dir=unused", "logger=none", *overrides])
    rc = to_run_config(cfg)
    tokenizer = load_tokenizer(rc.model)
    dm = GLUEDataModule(rc.task, rc.data, tokenizer, rc.seed)
    dm.setup("test")
    module = build_module(rc, tokenizer, dm.eval_split_names)
    load_checkpoint_weights(module, rc.ckpt_path)
    prepare_for_eval(rc, module, dm)
    return module.encoder.eval(), dm


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    p.add_argument("--task", default="sst2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=None, help="first N dev batches (default: the whole split)")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--config", nargs="+", action="append", required=True, metavar=("LABEL", "OVERRIDE"))
    p.add_argument("--out", default=None, help="append the command and the results to this file")
    a = p.parse_args(argv)
    if len(a.config) < 2:
        p.error("give at least two --config: a baseline and one to compare")
    from eat.config import register_configs
    from eat.errors import exit_on_user_error

    register_configs()
    models, dm = {}, None
    with exit_on_user_error():  # a bad override or checkpoint: one clear line, exit 2, nothing written
        for label, *overrides in a.config:
            models[label], dm = build(overrides, a)
    loader = dm._eval_loaders(a.batch_size)[0]
    batches = [b for i, b in enumerate(loader) if a.batches is None or i < a.batches]
    names = list(models)

    def forward(name, b):
        return models[name](b["input_ids"], b["attention_mask"], b.get("token_type_ids"))

    totals = {n: [] for n in names}
    correct, layers = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    with torch.inference_mode():
        for b in batches[:3]:  # warm-up
            for n in names:
                forward(n, b)
        for pass_ in range(a.passes):
            t = dict.fromkeys(names, 0.0)
            for i, b in enumerate(batches):
                for n in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
                    t0 = time.perf_counter()
                    out = forward(n, b)
                    t[n] += time.perf_counter() - t0
                    if pass_ == 0:
                        correct[n] += int((out.logits.argmax(-1) == b["labels"]).sum())
                        layers[n] += int(out.exit_layer.sum())
            for n in names:
                totals[n].append(t[n] * 1e3)
    N = sum(int(b["labels"].shape[0]) for b in batches)
    base = statistics.median(totals[names[0]])
    lines = [f"bs={a.batch_size}, {len(batches)} batches ({N} examples) x {a.passes} passes, "
             f"{torch.get_num_threads()} threads; ms per pass (median), speed-up = {names[0]} / config:"]
    for n in names:
        med = statistics.median(totals[n])
        lines.append(f"  {n}: {med:.1f} ms ({med / N:.3f} ms/example), speed-up {base / med:.3f}x, "
                     f"accuracy {100 * correct[n] / N:.2f}, avg exit layer {layers[n] / N:.2f}; "
                     f"passes {', '.join(f'{x:.0f}' for x in totals[n])}")
    print("\n".join(lines))
    if a.out:
        cmd = " ".join(shlex.quote(x) for x in [".venv/bin/python", "experiments/bench_interleaved.py", *sys.argv[1:]])
        with open(a.out, "a") as f:
            f.write(f"# {time.strftime('%Y-%m-%d')}: {cmd}\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
