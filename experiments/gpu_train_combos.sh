#!/usr/bin/env bash
# SST-2: the static model and the 7 mechanism combinations, each trained on its own (full train split,
# 1 epoch, the static protocol's settings: lr 5e-5, batch 32, seed 42, fp32; exit combinations with the
# joint loss over all heads) and evaluated on the full dev split at bs=1 and bs=32. Made for a lent GPU
# machine, where one epoch is a minute instead of half an hour: run from the repository root after
# `python experiments/gpu_prepare.py --train` packed `.gpu/`. Four trainings share the GPU at a time (the
# model is far too small to fill it). Environment: OUT (results folder), DEVICE (cuda; cpu for a dry run),
# PY, LIMIT (seconds for all of it), EXTRA (more Hydra overrides, e.g. trainer.limit_train_batches=5).
set -u
OUT=${OUT:-outputs/gpu_combos}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
EXTRA=${EXTRA:-}
G=$PWD/.gpu
mkdir -p "$OUT"
export PYTHONPATH=$G/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
if [ "$DEVICE" = cuda ]; then TRAINER=(trainer=gpu trainer.precision=32-true threads=4); else TRAINER=(trainer=cpu); fi

train() {  # one mechanism after another, in one lane
  for m in "$@"; do
    $PY train.py task=sst2 mechanism="$m" seed=42 data.dir="$G/glue" model.pretrained="$G/minilm" model.sha256=null \
      "${TRAINER[@]}" "eval_batch_sizes=[1,32]" logger=csv trainer.enable_progress_bar=false \
      results_csv="$OUT/sst2_combos_$DEVICE.csv" hydra.run.dir="/tmp/eat_combos/$m" ${EXTRA:-} \
      > "/tmp/eat_combos_$m.log" 2>&1
    echo "[combos] $m: exit $? after ${SECONDS}s"
    grep -E "^\[eat\]|Error" "/tmp/eat_combos_$m.log" | tail -4
  done
}
mkdir -p /tmp/eat_combos
timeout "${LIMIT:-330}" bash -c "$(declare -f train); $(declare -p TRAINER G OUT DEVICE PY EXTRA); export PYTHONPATH PYTHONUNBUFFERED WANDB_MODE
  train prune+sparse+exit none & train exit prune & train sparse+exit sparse & train prune+exit prune+sparse & wait" \
  2>&1 | tee "$OUT/log.txt"
tail -n 30 /tmp/eat_combos_*.log > "$OUT/tails.txt" 2>&1
echo "== done"
