#!/usr/bin/env bash
# MNLI or QQP under the offline protocol (conf/experiment/<task>_offline.yaml; the official train sets are not
# available offline, so these numbers are NOT comparable to official GLUE ones):
# static fine-tune, two-stage EAT, side-by-side benchmark (static, exit, prune+exit, prune+sparse+exit) at
# bs=1 and bs=32, exit-threshold frontier at bs=32.
# Usage: bash experiments/glue_offline.sh mnli|qqp [SEED] [HYDRA OVERRIDES...]
#        (GLUE folder: $EAT_GLUE_DIR or ../shared/data/glue; overrides go to both training runs)
#        STEPS (default train,bench,frontier) picks the parts: train while the CPU is shared, bench on a quiet
#        machine; `adapt` (not in the default) fine-tunes the whole static model with the mechanisms on
#        (experiment=eat_adapt) and evaluates it at several exit thresholds, `adapt_bench` benchmarks it; FRONTIER_SAMPLES limits the frontier to the
#        first N evaluation examples (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: bash experiments/glue_offline.sh mnli|qqp [SEED] [OVERRIDES...]}
case $TASK in mnli|qqp) ;; *) echo "task=$TASK: allowed values are mnli, qqp" >&2; exit 2;; esac
SEED=${2:-42}
shift; shift || true
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
EXP=${TASK}_offline
RES=experiments/results/${TASK}_offline.csv
STATIC=outputs/${TASK}_static_seed$SEED
EAT=outputs/${TASK}_eat_seed$SEED
ADAPT=outputs/${TASK}_adapt_seed$SEED
STEPS=${STEPS:-train,bench,frontier}
FRONTIER_LIMIT=${FRONTIER_SAMPLES:+data.max_eval_samples=$FRONTIER_SAMPLES}
COMMON=(seed=$SEED data.dir=$GLUE trainer.enable_progress_bar=false "eval_batch_sizes=[32]" results_csv=$RES)

if [[ $STEPS == *train* ]]; then
# 1. static fine-tune (the protocol's epochs, lr 5e-5, batch 32, length-grouped batches)
[ -f $STATIC/checkpoints/best.ckpt ] || $PY train.py experiment=$EXP model=minilm_l6 mechanism=none \
  "${COMMON[@]}" hydra.run.dir=$STATIC "$@"

# 2. EAT stage 2: exit heads on the frozen static backbone, pruning + sparse attention active
[ -f $EAT/checkpoints/best.ckpt ] || $PY train.py "experiment=[$EXP,eat_stage2]" \
  init_ckpt=$STATIC/checkpoints/best.ckpt "${COMMON[@]}" hydra.run.dir=$EAT "$@"
fi

if [[ $STEPS == *bench* ]]; then
# 3. static vs EAT and its parts, timed by the declared harness (eat.bench): bs=32 on the full evaluation split,
#    bs=1 on its first 2,000 examples (predictions do not depend on the batch size)
for BS in 32 1; do
  LIM=(); [ $BS = 1 ] && LIM=(--max-examples 2000)
  $PY experiments/bench_mechanisms.py --task $TASK --ckpt $EAT/checkpoints/best.ckpt --glue $GLUE --batch-sizes $BS \
    "${LIM[@]}" --only none,exit,prune+exit,prune+sparse+exit --common experiment=$EXP \
    --predictions experiments/results/predictions/${TASK}_bench --results experiments/results/${TASK}_bench.csv \
    --summary experiments/bench_$TASK.md
done
fi

if [[ $STEPS == *frontier* ]]; then
# 4. exit-threshold frontier on the same checkpoint, with and without pruning + sparse attention, no retraining
#    (bs=32: the exits do not depend on the batch size)
$PY eval.py -m experiment=$EXP ckpt_path=$EAT/checkpoints/best.ckpt mechanism=exit,prune+sparse+exit \
  mechanism.exit.threshold=0.6,0.8,0.9,0.95 data.dir=$GLUE "eval_batch_sizes=[32]" \
  trainer.enable_progress_bar=false results_csv=experiments/results/${TASK}_frontier.csv \
  hydra.sweep.dir=outputs/${TASK}_frontier $FRONTIER_LIMIT
fi

if [[ $STEPS == *adapt* ]]; then
# 5. adapted EAT: the whole static model fine-tuned with pruning, sparse attention and fresh exit heads on
[ -f $ADAPT/checkpoints/best.ckpt ] || $PY train.py "experiment=[$EXP,eat_adapt]" \
  init_ckpt=$STATIC/checkpoints/best.ckpt "${COMMON[@]}" results_csv=$ADAPT/results.csv hydra.run.dir=$ADAPT "$@"
$PY eval.py -m experiment=$EXP ckpt_path=$ADAPT/checkpoints/best.ckpt mechanism=prune+sparse+exit \
  mechanism.exit.threshold=0.8,0.9,0.95,0.99 "${COMMON[@]}" skip_completed=true \
  results_csv=experiments/results/${TASK}_adapt.csv hydra.sweep.dir=outputs/${TASK}_adapt_thresholds
# which part costs the accuracy on the adapted backbone: each mechanism left out in turn (threshold 0.9)
$PY eval.py -m experiment=$EXP ckpt_path=$ADAPT/checkpoints/best.ckpt mechanism=none,exit,sparse+exit "${COMMON[@]}" \
  skip_completed=true results_csv=experiments/results/${TASK}_adapt.csv hydra.sweep.dir=outputs/${TASK}_adapt_parts
$PY eval.py -m experiment=$EXP ckpt_path=$ADAPT/checkpoints/best.ckpt mechanism=prune+exit "mechanism.prune.keep_ratios=[0.8,0.8]" \
  "${COMMON[@]}" skip_completed=true results_csv=experiments/results/${TASK}_adapt.csv \
  hydra.sweep.dir=outputs/${TASK}_adapt_parts_prune
fi

if [[ $STEPS == *adapt_bench* ]]; then
# 6. the adapted model side by side with the static one (bs=32 full split, bs=1 first 2,000 examples)
for BS in 32 1; do
  LIM=(); [ $BS = 1 ] && LIM=(--max-examples 2000)
  $PY experiments/bench_mechanisms.py --task $TASK --ckpt $ADAPT/checkpoints/best.ckpt --glue $GLUE --batch-sizes $BS \
    "${LIM[@]}" --only none,prune+sparse+exit --common experiment=$EXP \
    --predictions experiments/results/predictions/${TASK}_adapt_bench --results experiments/results/${TASK}_adapt_bench.csv \
    --summary experiments/bench_${TASK}_adapt.md
done
fi
