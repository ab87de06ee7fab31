#!/usr/bin/env bash
# The CUDA benchmark, as one short script for a lent GPU machine (run from the repository root after
# `python experiments/gpu_prepare.py` packed `.gpu/`). Every stage has its own time limit, so the script
# ends inside the device tool's 10-minute call even when a stage hangs, and writes its results as it goes.
#   1. long sequences (synthetic, random weights, bs=1): none / sparse / prune / prune+sparse, 128..16384;
#   2. SST-2 dev, the trained checkpoint, the 10 configurations side by side, bs=1, 32 and 128, fp32
#      (2 warm-up batches per run: bs=128 has only 7 batches on the 872 dev sentences);
#   3. the same for static / exit / prune+sparse+exit under bf16 autocast (trainer=gpu), one repeat.
# Environment: OUT (results folder; default outputs/gpu), DEVICE (cuda; cpu for a dry run here),
# PY (python), REPEATS (3), BATCH_SIZES (1,32,128), BS1_EXAMPLES (all), LENGTHS, LIMIT_LONG/LIMIT_FP32/LIMIT_BF16 (seconds).
set -u
OUT=${OUT:-outputs/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
REPEATS=${REPEATS:-3}
BATCH_SIZES=${BATCH_SIZES:-1,32,128}
LENGTHS=${LENGTHS:-128,256,512,1024,2048,4096,8192,16384}
G=$PWD/.gpu
mkdir -p "$OUT"
export PYTHONPATH=$G/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
LOG=$OUT/log.txt

if [ "$DEVICE" = cuda ]; then
  TRAINER=(trainer=gpu trainer.precision=32-true)
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
else
  TRAINER=(trainer=cpu)
fi
$PY -c "import torch, lightning, transformers, hydra, platform; print('python', platform.python_version(), 'torch', \
torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__, 'hydra', hydra.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$LOG"
COMMON=(--ckpt "$G/sst2_eat_fp16.ckpt" --glue "$G/glue" --out-dir /tmp/eat_gpu_bench)
MODEL=(model.pretrained=null "model.tokenizer=$G/minilm" callbacks.latency.warmup_batches=2)
BS1=()
[ -n "${BS1_EXAMPLES:-}" ] && BS1=(--bs1-examples "$BS1_EXAMPLES")

echo "== 1. long sequences ($DEVICE)" | tee -a "$LOG"
timeout "${LIMIT_LONG:-80}" $PY experiments/bench_long_sequences.py --device "$DEVICE" --lengths "$LENGTHS" \
  --repeats 10 --out "$OUT/long_sequences_$DEVICE.csv" 2>&1 | tee -a "$LOG"

echo "== 2. SST-2, 10 configurations, fp32 ($DEVICE)" | tee -a "$LOG"
timeout "${LIMIT_FP32:-330}" $PY experiments/bench_mechanisms.py "${COMMON[@]}" "${BS1[@]}" --repeats "$REPEATS" --batch-sizes "$BATCH_SIZES" \
  --results "$OUT/sst2_bench_$DEVICE.csv" --summary "$OUT/bench_mechanisms_$DEVICE.md" -- \
  "${MODEL[@]}" "${TRAINER[@]}" 2>&1 | tee -a "$OUT/raw.txt" | grep -E "^\[(eat|bench)\]|^\||^#|Error|error" | tee -a "$LOG"

if [ "$DEVICE" = cuda ]; then
  echo "== 3. SST-2, bf16 autocast (cuda)" | tee -a "$LOG"
  timeout "${LIMIT_BF16:-70}" $PY experiments/bench_mechanisms.py "${COMMON[@]}" "${BS1[@]}" --repeats 1 --batch-sizes "$BATCH_SIZES" \
    --only none,exit,prune+sparse+exit --results "$OUT/sst2_bench_cuda_bf16.csv" \
    --summary "$OUT/bench_mechanisms_cuda_bf16.md" -- "${MODEL[@]}" trainer=gpu 2>&1 \
    | tee -a "$OUT/raw.txt" | grep -E "^\[(eat|bench)\]|^\||^#|Error|error" | tee -a "$LOG"
fi
echo "== done" | tee -a "$LOG"
