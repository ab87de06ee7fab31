#!/usr/bin/env bash
# Issue 14's table on SST-2 dev: every static peer a CPU user would pick and EAT in every runtime, at the operating
# point chosen on the selection split (experiments/sst2.sh SEED must have run: checkpoint + operating_point.yaml),
# timed by the declared harness (python -m eat.bench) against HF fp32. BATCH_SIZES (default "1 32") per seed.
# Usage: bash experiments/sst2_runtimes.sh SEED
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: sst2_runtimes.sh SEED}
BATCH_SIZES=${BATCH_SIZES:-1 32}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
EAT=outputs/sst2/eat_seed$SEED/checkpoints/best.ckpt
OP=experiments/results/sst2_select/seed$SEED/operating_point.yaml
$PY -m eat.bench --ckpt $EAT --task sst2 --glue $GLUE --batch-sizes $BATCH_SIZES --passes 5 --common seed=$SEED \
  --config hf_fp32 mechanism=none peer=hf_static \
  --config static_eager mechanism=none \
  --config hf_int8 mechanism=none peer=hf_int8 \
  --config ort_fp32 mechanism=none peer=ort_fp32 \
  --config ort_int8 mechanism=none peer=ort_int8 \
  --config eat_eager operating_point=$OP \
  --config eat_int8 operating_point=$OP runtime=int8 \
  --config eat_ort operating_point=$OP runtime=ort \
  --config eat_ort_int8 operating_point=$OP runtime=ort_int8 \
  --results experiments/results/sst2_runtimes.csv --predictions experiments/results/predictions/sst2_runtimes/seed$SEED \
  --summary experiments/bench_sst2_runtimes.md
