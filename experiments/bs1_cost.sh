#!/usr/bin/env bash
# Where EAT's bs=1 time goes on the host that runs it (RESULTS 2j: EAT's points cost ~0.82 ms per layer run at bs=1
# against ~0.48 ms per layer of the static models in ORT INT8 opt). One run of the declared harness at bs=1 over the
# SST-2 dev set, each configuration taking one piece away from the next:
#   ort_int8_opt -> ort_int8: the transformer optimizer's fused layers (QAttention, SkipLayerNormalization, ...);
#   ort_int8 -> static_whole_row / _token: EAT's own layer graphs (per-token INT8 activation scales) for the same
#     6 static layers, no mechanism;
#   -> exit_never_whole_row: + the 5 exit decisions (threshold 1.0: heads, softmax and If nodes run, ~no row leaves);
#   -> exit_0.7_whole_row: exits at the matched-K=3 threshold, no pruning; -> match_k3_whole_row: + its pruning;
#   truncated_k2_ort_int8_opt: the 2-layer static model, for the depth those exits reach.
# Needs: experiments/depth_frontier.sh SEED (the K=3 matched point) and train_truncated.sh SEED 2.
# Usage: bash experiments/bs1_cost.sh [SEED]   (RUN=NAME: own results files)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-42}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
EAT=outputs/sst2/eat_seed$SEED/checkpoints/best.ckpt
OP=experiments/results/sst2_select/seed${SEED}_confidence0.8_match_k3/operating_point.yaml
K2=outputs/sst2/truncated_k2_seed$SEED/checkpoints/best.ckpt
for f in $EAT $OP $K2; do
  [ -f $f ] || { echo "error: $f not found: run bash experiments/depth_frontier.sh $SEED first" >&2; exit 2; }
done
W=(runtime=ort_int8 runtime.graph=whole runtime.activation=row)
OUT=sst2_bs1_cost${RUN:+_$RUN}
$PY -m eat.bench --ckpt $EAT --task sst2 --glue $GLUE --batch-sizes 1 --passes 5 --common seed=$SEED \
  --config ort_int8_opt mechanism=none peer=ort_int8_opt \
  --config ort_int8 mechanism=none peer=ort_int8 \
  --config static_whole_row mechanism=none "${W[@]}" \
  --config static_whole_token mechanism=none runtime=ort_int8 runtime.graph=whole runtime.activation=token \
  --config exit_never_whole_row mechanism=exit mechanism.exit.threshold=1.0 "${W[@]}" \
  --config exit_0.7_whole_row mechanism=exit mechanism.exit.threshold=0.7 "${W[@]}" \
  --config match_k3_whole_row operating_point=$OP "${W[@]}" \
  --config truncated_k2_ort_int8_opt mechanism=none peer=ort_int8_opt model.keep_layers=2 ckpt_path=$K2 \
  --results experiments/results/$OUT.csv --predictions experiments/results/predictions/$OUT/seed$SEED \
  --summary experiments/bench_$OUT.md
