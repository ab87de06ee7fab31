#!/usr/bin/env bash
# SST-2 trainings of the selection-split protocol (RESULTS section 2) for one seed: the static fine-tune and
# stage 2 (exit heads on the frozen static backbone), both on train.tsv minus the 2,000-row selection split
# (data.selection_examples, the default). Both runs stop after STEPS optimiser steps (default 1,000 of the
# epoch's 2,042 batches of 32: the 2-core CPU budget of one session for three seeds; STEPS=-1 trains the epoch). Each step is skipped when its checkpoint exists, so a rerun after a
# kill redoes only what is missing.
# SPLIT=sentence: the selection split is 2,000 whole training sentences with every phrase of them left out of training
# (data.selection_unit=sentence); checkpoints go to outputs/sst2_sentence/, rows to sst2_sentence_train.csv.
# Usage: bash experiments/sst2_train.sh SEED [HYDRA OVERRIDES...]   e.g. threads=1 to run seeds side by side
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: sst2_train.sh SEED [OVERRIDES...]}
shift
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
STEPS=${STEPS:-1000}
# STEPS is a count here; experiments/sst2.sh's STEPS (which steps to run) reaches this script as TRAIN_STEPS
[[ $STEPS =~ ^-?[0-9]+$ ]] || { echo "STEPS=$STEPS: sst2_train.sh needs the number of optimiser steps (an integer, -1 for the epoch)" >&2; exit 2; }
# validate (and checkpoint) when the last step is reached, not at the end of an epoch that never ends
LIMIT="trainer.max_steps=$STEPS"; [ "$STEPS" -gt 0 ] && LIMIT="$LIMIT trainer.val_check_interval=$STEPS"
PY=.venv/bin/python
RES=experiments/results/sst2_train.csv
D=outputs/sst2
case ${SPLIT:-row} in
  row) ;;
  sentence) RES=experiments/results/sst2_sentence_train.csv; D=outputs/sst2_sentence
            set -- "$@" data.selection_unit=sentence ;;
  *) echo "SPLIT=$SPLIT: allowed values are row, sentence" >&2; exit 2 ;;
esac
STATIC=$D/static_seed$SEED
EAT=$D/eat_seed$SEED

# 1. static fine-tune: 65,323 training sentences, STEPS steps, lr 5e-5 (linear warm-up 10%, decay to 0), batch 32;
#    evaluated on dev at bs=32
[ -f $STATIC/checkpoints/best.ckpt ] || $PY train.py task=sst2 model=minilm_l6 mechanism=none seed=$SEED \
  $LIMIT data.dir=$GLUE trainer.enable_progress_bar=false "eval_batch_sizes=[32]" results_csv=$RES \
  hydra.run.dir=$STATIC "$@"

# 2. stage 2: exit heads on the frozen static backbone, pruning (keep 0.7) and the window active, as before
[ -f $EAT/checkpoints/best.ckpt ] || $PY train.py experiment=eat_stage2 seed=$SEED \
  init_ckpt=$STATIC/checkpoints/best.ckpt $LIMIT data.dir=$GLUE data.group_by_length=true \
  "mechanism.prune.keep_ratios=[0.7,0.7]" trainer.enable_progress_bar=false "eval_batch_sizes=[32]" \
  results_csv=$RES hydra.run.dir=$EAT "$@"
