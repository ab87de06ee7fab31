"""Our static encoder vs Hugging Face's `AutoModelForSequenceClassification` (same weights), interleaved per
batch: each dev batch goes through both models back to back (order alternating), so machine drift, which
moves whole benchmark runs by 10-20% on a shared VM, hits both alike. No Lightning loop: the forwards only.

    .venv/bin/python experiments/bench_ours_vs_hf.py --ckpt outputs/sst2_eat_seed42/checkpoints/best.ckpt \
        --batch-size 32
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=28, help="first N dev batches")
    p.add_argument("--passes", type=int, default=3)
    a = p.parse_args(argv)
    from hydra import compose, initialize_config_dir

    from eat.config import register_configs, to_run_config
    from eat.data.glue import GLUEDataModule
    from eat.model.build import load_tokenizer
    from eat.peers import HFStatic
    from eat.runner import build_module, load_checkpoint_weights

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["task=sst2", "mechanism=none", f"data.dir={a.glue}",
                                                     f"ckpt_path={a.ckpt}", "output_dir=unused", "logger=none"])
    rc = to_run_config(cfg)
    tokenizer = load_tokenizer(rc.model)
    dm = GLUEDataModule(rc.task, rc.data, tokenizer, rc.seed)
    dm.setup("test")
    module = build_module(rc, tokenizer, dm.eval_split_names)
    load_checkpoint_weights(module, rc.ckpt_path)
    models = {"ours": module.encoder.eval(), "hf_static": HFStatic(module.encoder).eval()}
    batches = [b for _, b in zip(range(a.batches), dm._eval_loaders(a.batch_size)[0])]

    def forward(model, b):
        return model(b["input_ids"], b["attention_mask"], b.get("token_type_ids"))

    totals = {n: [] for n in models}
    with torch.inference_mode():
        for b in batches[:3]:  # warm-up
            for m in models.values():
                forward(m, b)
        for _ in range(a.passes):
            t = dict.fromkeys(models, 0.0)
            for i, b in enumerate(batches):
                for name in (list(models) if i % 2 == 0 else list(models)[::-1]):
                    t0 = time.perf_counter()
                    forward(models[name], b)
                    t[name] += time.perf_counter() - t0
            for n in t:
                totals[n].append(t[n] * 1e3)
    ours, hf = (statistics.median(totals[n]) for n in ("ours", "hf_static"))
    print(f"bs={a.batch_size}, {len(batches)} batches x {a.passes} passes, {torch.get_num_threads()} threads: "
          f"ours {ours:.1f} ms, hf_static {hf:.1f} ms per pass (median); ours/hf = {ours / hf:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
