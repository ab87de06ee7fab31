#!/usr/bin/env bash
# peer=truncated (issue 14): the smaller static model at matched cost. The first K layers of the backbone
# (model.keep_layers=K; the pretrained weights of the other layers are dropped) fine-tuned as a plain
# classifier on the same data as the static fine-tune of experiments/sst2_train.sh (train.tsv minus the
# 2,000-row selection split, STEPS optimiser steps as the static fine-tune (default 1,000; -1 = the epoch), lr 5e-5,
# batch 32). K is the EAT point's average exit depth rounded up.
# Skipped when its checkpoint exists. Evaluate / time it with:
#   eval.py ckpt_path=outputs/sst2/truncated_k${K}_seed$SEED/checkpoints/best.ckpt mechanism=none \
#     peer=truncated model.keep_layers=K
# TASK=mnli|qqp (default sst2): the offline protocol's training data and schedule instead (experiment=TASK_offline,
# its epochs, as experiments/pairs.sh's static fine-tune), into outputs/TASK_truncated_kK_seedSEED.
# Usage: [TASK=sst2|mnli|qqp] bash experiments/train_truncated.sh SEED K [HYDRA OVERRIDES...]   e.g. threads=1
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: train_truncated.sh SEED K [OVERRIDES...]}
K=${2:?usage: train_truncated.sh SEED K [OVERRIDES...]}
shift 2
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
TASK=${TASK:-sst2}
case $TASK in
  sst2) DATA=(task=sst2); OUT=${EAT_TRUNCATED_OUT:-outputs/sst2/truncated_k${K}_seed$SEED}
        STEPS=${STEPS:-1000}; LIMIT=(trainer.max_steps=$STEPS)
        [ "$STEPS" -gt 0 ] && LIMIT+=(trainer.val_check_interval=$STEPS) ;;
  mnli|qqp) DATA=(experiment=${TASK}_offline); OUT=${EAT_TRUNCATED_OUT:-outputs/${TASK}_truncated_k${K}_seed$SEED}
        LIMIT=() ;;
  *) echo "TASK=$TASK: allowed values are sst2, mnli, qqp" >&2; exit 2 ;;
esac
RES=${EAT_TRUNCATED_RESULTS:-experiments/results/${TASK}_truncated.csv}

[ -f $OUT/checkpoints/best.ckpt ] || $PY train.py "${DATA[@]}" model=minilm_l6 mechanism=none model.keep_layers=$K \
  seed=$SEED "${LIMIT[@]}" data.dir=$GLUE trainer.enable_progress_bar=false "eval_batch_sizes=[32]" results_csv=$RES \
  hydra.run.dir=$OUT "$@"
