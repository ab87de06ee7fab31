#!/usr/bin/env bash
# SST-2 on this machine: static fine-tune, two-stage EAT, side-by-side benchmark, threshold frontier.
# Usage: bash experiments/sst2.sh [SEED] [HYDRA OVERRIDES...]   (GLUE folder: $EAT_GLUE_DIR or ../shared/data/glue)
# Overrides go to both training runs, e.g. threads=1 to run two seeds side by side on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-42}
shift || true
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
RES=experiments/results
STATIC=outputs/sst2_static_seed$SEED
EAT=outputs/sst2_eat_seed$SEED

# 1. static fine-tune: full train (67,349), 1 epoch, lr 5e-5, batch 32; evaluated on the full dev set (872)
[ -f $STATIC/checkpoints/best.ckpt ] || $PY train.py task=sst2 model=minilm_l6 mechanism=none seed=$SEED \
  data.dir=$GLUE trainer.enable_progress_bar=false results_csv=$RES/sst2.csv hydra.run.dir=$STATIC "$@"

# 2. EAT stage 2: exit heads on the frozen static backbone, pruning (the paper's keep 0.7, as in the committed
#    runs) + sparse attention active
[ -f $EAT/checkpoints/best.ckpt ] || $PY train.py experiment=eat_stage2 seed=$SEED \
  init_ckpt=$STATIC/checkpoints/best.ckpt data.dir=$GLUE data.group_by_length=true \
  "mechanism.prune.keep_ratios=[0.7,0.7]" \
  trainer.enable_progress_bar=false results_csv=$RES/sst2.csv hydra.run.dir=$EAT "$@"

# 3. this seed's static model and its EAT operating point (train.py's default prune+sparse+exit: keep 0.8,
#    threshold 0.9) on the full dev set at bs=32; `make report` averages them over seeds
$PY eval.py -m task=sst2 ckpt_path=$EAT/checkpoints/best.ckpt mechanism=none,prune+sparse+exit seed=$SEED \
  data.dir=$GLUE "eval_batch_sizes=[32]" skip_completed=true trainer.enable_progress_bar=false \
  results_csv=$RES/sst2_seeds.csv hydra.sweep.dir=outputs/sst2_seeds_seed$SEED
#    ... and the safer keep ratio 0.9 (section 2d) and exits alone, on the same checkpoint
$PY eval.py -m task=sst2 ckpt_path=$EAT/checkpoints/best.ckpt mechanism=prune+sparse+exit "mechanism.prune.keep_ratios=[0.9,0.9]" \
  seed=$SEED data.dir=$GLUE "eval_batch_sizes=[32]" skip_completed=true trainer.enable_progress_bar=false \
  results_csv=$RES/sst2_seeds.csv hydra.sweep.dir=outputs/sst2_seeds_k09_seed$SEED
$PY eval.py -m task=sst2 ckpt_path=$EAT/checkpoints/best.ckpt mechanism=exit seed=$SEED data.dir=$GLUE \
  "eval_batch_sizes=[32]" skip_completed=true trainer.enable_progress_bar=false \
  results_csv=$RES/sst2_seeds.csv hydra.sweep.dir=outputs/sst2_seeds_exit_seed$SEED

if [ "$SEED" = 42 ]; then
  # 4. the 8 mechanisms + hf_static + the reference's mask mode, side by side on one checkpoint
  $PY experiments/bench_mechanisms.py --ckpt $EAT/checkpoints/best.ckpt --glue $GLUE \
    --repeats 2 --results $RES/sst2_bench.csv --summary experiments/bench_mechanisms.md
  # 5. exit-threshold frontier (with and without pruning) on the same checkpoint, no retraining (bs=1 and bs=32)
  $PY eval.py -m task=sst2 ckpt_path=$EAT/checkpoints/best.ckpt mechanism=exit,prune+sparse+exit \
    mechanism.exit.threshold=0.5,0.6,0.7,0.8,0.85,0.9,0.95,0.99 data.dir=$GLUE \
    trainer.enable_progress_bar=false results_csv=$RES/sst2_frontier.csv hydra.sweep.dir=outputs/sst2_frontier
fi
