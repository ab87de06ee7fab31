#!/usr/bin/env bash
# The SST-2 headline of experiments/RESULTS.md section 2, for one seed, under the selection-split protocol:
#   1-2. static fine-tune and stage 2 (exit heads), on train.tsv minus the 2,000-row selection split
#        (experiments/sst2_train.sh; skipped when the checkpoints exist);
#   3.   the operating point, chosen on the selection split by python -m eat.select (never on dev);
#   4.   (STEPS=bench) static, HF static and EAT at that point on the full dev set, timed by the declared harness
#        (python -m eat.bench: bs=1 and bs=32, interleaved, 5 passes); its rows carry the dev accuracy too.
# Usage: bash experiments/sst2.sh SEED [HYDRA OVERRIDES for the trainings...]; STEPS=train,select,bench (default all);
#   TRAIN_STEPS: the trainings' optimiser steps (sst2_train.sh's STEPS, default 1000)
#   CONFIDENCE=C: select with eat.select confidence=C (a point is feasible only if the one-sided paired lower bound of
#   its accuracy loss is within the budget), into sst2_select/seedSEED_confidenceC; the bench step then times it.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: sst2.sh SEED [OVERRIDES...]}
shift
STEPS=${STEPS:-train,select,bench}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
EAT=outputs/sst2/eat_seed$SEED/checkpoints/best.ckpt
SEL=experiments/results/sst2_select/seed$SEED${CONFIDENCE:+_confidence$CONFIDENCE}
SPLIT_ARGS=""
if [ "${SPLIT:-row}" = sentence ]; then  # SPLIT=sentence: the sentence-level selection split (sst2_train.sh)
  EAT=outputs/sst2_sentence/eat_seed$SEED/checkpoints/best.ckpt
  SEL=experiments/results/sst2_select/sentence_seed$SEED${CONFIDENCE:+_confidence$CONFIDENCE}
  SPLIT_ARGS=data.selection_unit=sentence
fi

# sst2_train.sh reads STEPS as its number of optimiser steps: pass it TRAIN_STEPS (default 1,000), never this list
[[ $STEPS == *train* ]] && STEPS=${TRAIN_STEPS:-1000} bash experiments/sst2_train.sh "$SEED" "$@"

if [[ $STEPS == *select* ]]; then
  # SELECT_ARGS: more eat.select settings, e.g. threads=1 when seeds are selected side by side
  $PY -m eat.select out=$SEL/operating_point.yaml candidates=3 ${CONFIDENCE:+confidence=$CONFIDENCE} ${SELECT_ARGS:-} \
    -- task=sst2 ckpt_path=$EAT seed=$SEED data.dir=$GLUE $SPLIT_ARGS
fi

if [[ $STEPS == *bench* ]]; then
  $PY -m eat.bench --ckpt $EAT --task sst2 --glue $GLUE --batch-sizes 1 32 --passes 5 --common seed=$SEED \
    --config static mechanism=none --config hf_static mechanism=none peer=hf_static \
    --config eat operating_point=$SEL/operating_point.yaml \
    --results experiments/results/sst2_headline.csv --predictions experiments/results/predictions/sst2_headline/seed$SEED \
    --summary experiments/bench_sst2_headline.md
fi
