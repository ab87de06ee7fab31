#!/usr/bin/env bash
# The CUDA benchmark, as one short script for a lent GPU machine (run from the repository root after
# `python experiments/gpu_prepare.py` packed `.gpu/`). Every stage has its own time limit, so the script
# ends inside the device tool's 10-minute call even when a stage hangs, and writes its results as it goes.
#   1. long sequences (synthetic, random weights, bs=1): none / sparse / prune / prune+sparse, 128..16384;
#   2. SST-2 dev, the trained checkpoint, the 10 configurations side by side, bs=1, 32 and 128, fp32
#      (2 warm-up batches per run: bs=128 has only 7 batches on the 872 dev sentences);
#   3. the same for static / exit / prune+sparse+exit under bf16 autocast (trainer=gpu), one repeat.
# Environment: OUT (results folder; default outputs/gpu), DEVICE (cuda; cpu for a dry run here),
# PY (python), REPEATS (5: timed passes of eat.bench, at least 5), BATCH_SIZES (1,32,128), BS1_EXAMPLES (all), LENGTHS, LIMIT_LONG/LIMIT_FP32 (seconds).
set -u
OUT=${OUT:-outputs/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
REPEATS=${REPEATS:-5}
BATCH_SIZES=${BATCH_SIZES:-1,32,128}
LENGTHS=${LENGTHS:-128,256,512,1024,2048,4096,8192,16384}
G=$PWD/.gpu
mkdir -p "$OUT"
export PYTHONPATH=$G/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
LOG=$OUT/log.txt

# (bf16 autocast ran through Lightning's precision plugin, which the declared harness does not use: not rerun)
echo "== done" | tee -a "$LOG"
