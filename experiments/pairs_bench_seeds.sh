#!/usr/bin/env bash
# Issue 15: every seed's EAT model at its chosen point, in ONE run of the declared harness (eat.bench: one process,
# the same batches, configurations interleaved with rotating order, 5 passes): bs=32 on the whole evaluation split,
# bs=1 on its first N1 (default 2,000) examples, 2 threads.
# One static fine-tune (the first seed's) is the baseline of every seed: its time does not depend on its weights
# (dense fp32, the same shapes and batches), so 3 seeds cost one static configuration instead of three. Its accuracy
# in these rows is the first seed's only: each seed's static accuracy is eval.py's (experiments/results/T_offline.csv).
# Points and checkpoints are named as in experiments/pairs.sh (experiments/pairs_paths.sh), with the same
# EAT, HEADS, CONFIDENCE and REF settings (an operating point carries its own mechanism settings, pooling included).
# Usage: [EAT=joint] [HEADS=pair] [CONFIDENCE=C] [REF=static] [NAME=...] bash experiments/pairs_bench_seeds.sh \
#          mnli|qqp "42 43 44" [HYDRA OVERRIDES for every configuration...]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:?usage: pairs_bench_seeds.sh mnli|qqp \"SEEDS\"}
SEEDS=(${2:?usage: pairs_bench_seeds.sh mnli|qqp \"SEEDS\"})
shift 2
case $T in mnli|qqp) ;; *) echo "task=$T: allowed values are mnli, qqp" >&2; exit 2 ;; esac
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
O=${OUT:-outputs}
PY=.venv/bin/python
R=${RESULTS:-experiments/results}
S=${SUMMARIES:-experiments}
EAT=${EAT:-distill}
source experiments/pairs_paths.sh
CFGS=(); BASE=
for SEED in "${SEEDS[@]}"; do
  pair_paths $SEED
  [ -n "$BASE" ] || BASE=$STATIC
  for f in $STATIC $E1 $OP; do [ -f $f ] || { echo "pairs_bench_seeds.sh: $f not found (seed $SEED)" >&2; exit 2; }; done
  CFGS+=(--config eat_seed$SEED seed=$SEED ckpt_path=$E1 operating_point=$OP)
done
NAME=${NAME:-pairs_seeds${HEADS:+_$HEADS}$J${CONFIDENCE:+_confidence$CONFIDENCE}${REF:+_ref$REF}${POINT:+_$POINT}}
for BS in ${BENCH_BS:-32 1}; do
  LIM=(); [ $BS = 1 ] && LIM=(--max-examples ${N1:-2000}); [ $BS = 32 ] && [ -n "${N32:-}" ] && LIM=(--max-examples $N32)
  $PY -m eat.bench --ckpt $BASE --task $T --glue $GLUE --batch-sizes $BS --passes 5 \
    --common experiment=${T}_offline seed=${SEEDS[0]} "$@" "${LIM[@]}" \
    --config static mechanism=none ckpt_path=$BASE "${CFGS[@]}" \
    --results $R/${T}_$NAME.csv --predictions $R/predictions/${T}_$NAME --summary $S/bench_${T}_$NAME.md
done
