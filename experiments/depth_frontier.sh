#!/usr/bin/env bash
# Per-example exits against the static-depth family, at matched ACCURACY (issue 14's truncated row, asked the other
# way round). runtimes.sh compares EAT with the smaller static model of matched COST (K = its exit depth rounded up),
# where EAT ties at best and is 2-3 points more accurate (RESULTS 6b). Here, for each depth K in KS, EAT's point is
# chosen on the held-out selection split as the fastest (by FLOPs) that is at least as accurate as the K-layer model
# THERE (eat.select budget=0 reference=TRUNCATED_K reference_keep_layers=K, one-sided paired bound at CONFIDENCE):
# the question a user with a latency budget asks is "which model is most accurate at this cost, or cheapest at
# this accuracy?". Then one run of the declared harness (eat.bench: interleaved, same batches, 5 passes, full dev set,
# bs=1 and bs=32) times every K-layer model (K = 1..5 as trained, and the full model) in its fastest runtime (ORT
# INT8 after the transformer optimizer), every matched EAT point and the headline point (budget 0.5 against the
# full model) in EAT's fastest (the whole graph, ORT INT8, row scales), against HF fp32.
#   Needs: STEPS=train,select CONFIDENCE=C bash experiments/sst2.sh SEED (the EAT model and its headline point),
#          bash experiments/train_truncated.sh SEED K for every K in KS (others trained join as static rows).
#   Table: python experiments/table_depth_frontier.py (make report); RESULTS 2j.
#   GRID: eat.select's grid for the matched points (default conf/grid/frontier.yaml: thresholds every 0.05 from 0.55).
#   BENCH_ARGS: more eat.bench arguments (e.g. --max-examples 16 with RUN=try for a quick check of the run).
#   STEPS=select,bench (default both); SELECT_ARGS: more eat.select settings, e.g. threads=1 beside a training.
#   POINTS=exits: every EAT point is exits alone (GRID default conf/grid/exits.yaml), the headline one too (chosen
#          here on selection: budget 0.5 against the full model), into ..._exits folders, and timed in the runtime
#          that runs exits inside the static peer's own optimized graph (runtime=ort_int8_opt, eat/optimized_graph.py),
#          each also with the peer's per-call INT8 scales (eat_..._tensor); beside them the sst2.sh
#          headline point (prune+exit) in the whole graph as before (eat_prune_headline_whole). Results in
#          sst2_depth_frontier_exits[_RUN].csv.
# Usage: [CONFIDENCE=0.8] [KS="2 3 4 5"] [POINTS=exits] [RUN=NAME] [BATCH_SIZES="1 32"] bash experiments/depth_frontier.sh SEED
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: depth_frontier.sh SEED}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
CONFIDENCE=${CONFIDENCE:-0.8}
KS=${KS:-2 3 4 5}
for K in $KS; do
  case $K in [1-5]) ;; *) echo "KS: K=$K: allowed values are 1 to 5 (the backbone has 6 layers)" >&2; exit 2 ;; esac
done
case ${POINTS:-} in ""|exits) ;; *) echo "POINTS=$POINTS: allowed values are exits or unset" >&2; exit 2 ;; esac
X=${POINTS:+_$POINTS}  # the folders and results of exits-only points
EAT=outputs/sst2/eat_seed$SEED/checkpoints/best.ckpt
OP=experiments/results/sst2_select/seed${SEED}_confidence$CONFIDENCE/operating_point.yaml
[ -f $EAT ] && [ -f $OP ] || { echo "error: $EAT or $OP not found: run STEPS=train,select CONFIDENCE=$CONFIDENCE" \
  "bash experiments/sst2.sh $SEED first" >&2; exit 2; }
trunc() { echo outputs/sst2/truncated_k$1_seed$SEED/checkpoints/best.ckpt; }
for K in $KS; do
  [ -f "$(trunc $K)" ] || { echo "error: $(trunc $K) not found: run bash experiments/train_truncated.sh $SEED $K" >&2; exit 2; }
done

# 1. the matched points, chosen on the selection split (each skipped when its operating point exists)
match_op() { echo experiments/results/sst2_select/seed${SEED}_confidence${CONFIDENCE}_match_k$1$X/operating_point.yaml; }
GRID=${GRID:-${POINTS:-frontier}}
# A K whose model no grid point matches is a result, not a failure: eat.select's message is kept in no_point.txt
# beside its selection.csv, and the K-layer model is timed without a matched EAT point.
STEPS=${STEPS:-select,bench}
HEADLINE=$OP
if [ -n "$X" ]; then  # the exits-only headline point: within 0.5 points of the full model on selection
  HEADLINE=experiments/results/sst2_select/seed${SEED}_confidence$CONFIDENCE$X/operating_point.yaml
  if [[ $STEPS == *select* ]] && [ ! -f $HEADLINE ]; then
    $PY -m eat.select out=$HEADLINE grid=$GRID confidence=$CONFIDENCE speed=flops ${SELECT_ARGS:-} -- task=sst2 \
      ckpt_path=$EAT seed=$SEED data.dir=$GLUE
  fi
  [ -f $HEADLINE ] || { echo "error: $HEADLINE not found: run STEPS=select first" >&2; exit 2; }
fi
MATCHED=
for K in $KS; do
  D=$(dirname "$(match_op $K)")
  if [[ $STEPS == *select* ]] && [ ! -f "$(match_op $K)" ] && [ ! -f $D/no_point.txt ]; then
    mkdir -p $D
    if ! $PY -m eat.select out="$(match_op $K)" budget=0 grid=$GRID confidence=$CONFIDENCE speed=flops \
        reference="$(trunc $K)" reference_keep_layers=$K ${SELECT_ARGS:-} -- task=sst2 ckpt_path=$EAT seed=$SEED \
        data.dir=$GLUE 2> $D/select.err; then
      cat $D/select.err >&2
      grep "no point of the grid" $D/select.err > $D/no_point.txt || { rm -f $D/no_point.txt; exit 2; }
    fi
    rm -f $D/select.err
  fi
  if [ -f "$(match_op $K)" ]; then MATCHED="$MATCHED $K"
  elif [ -f $D/no_point.txt ]; then echo "K=$K: no EAT point is as accurate as the $K-layer model on selection ($D/no_point.txt)"
  else echo "error: $(match_op $K) not found: run STEPS=select first" >&2; exit 2; fi
done
[[ $STEPS == *bench* ]] || exit 0

# 2. one harness run: the static-depth family and the EAT points, each in its fastest runtime
WHOLE=(runtime=ort_int8 runtime.graph=whole runtime.activation=row)
FAST=("${WHOLE[@]}")
[ -n "$X" ] && FAST=(runtime=ort_int8_opt)
CONFIGS=(--config hf_fp32 mechanism=none peer=hf_static --config ort_int8_opt mechanism=none peer=ort_int8_opt)
for K in 1 2 3 4 5; do
  [ -f "$(trunc $K)" ] && CONFIGS+=(--config truncated_k${K}_ort_int8_opt mechanism=none peer=ort_int8_opt
    model.keep_layers=$K ckpt_path="$(trunc $K)")
done
CONFIGS+=(--config eat_headline operating_point=$HEADLINE "${FAST[@]}")
[ -n "$X" ] && CONFIGS+=(--config eat_headline_tensor operating_point=$HEADLINE "${FAST[@]}" runtime.activation=tensor
  --config eat_prune_headline_whole operating_point=$OP "${WHOLE[@]}")
for K in $MATCHED; do
  CONFIGS+=(--config eat_match_k$K operating_point="$(match_op $K)" "${FAST[@]}")
  # exits-only points also with the peer's own INT8 (one scale per call: the quantization the static rows run)
  [ -n "$X" ] && CONFIGS+=(--config eat_match_k${K}_tensor operating_point="$(match_op $K)" "${FAST[@]}"
    runtime.activation=tensor)
done
OUT=sst2_depth_frontier$X${RUN:+_$RUN}
$PY -m eat.bench --ckpt $EAT --task sst2 --glue $GLUE --batch-sizes ${BATCH_SIZES:-1 32} --passes 5 \
  --common seed=$SEED "${CONFIGS[@]}" --results experiments/results/$OUT.csv \
  --predictions experiments/results/predictions/$OUT/seed$SEED --summary experiments/bench_$OUT.md ${BENCH_ARGS:-}
