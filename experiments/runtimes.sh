#!/usr/bin/env bash
# Issue 14's table: every static peer a CPU user would pick and EAT in every runtime, at the operating point chosen
# on the selection split, timed by the declared harness (python -m eat.bench, interleaved, 5 passes) against HF fp32.
#   sst2: experiments/sst2.sh SEED must have run (checkpoint + operating_point.yaml); the truncated peers join when
#         experiments/train_truncated.sh SEED K has trained them (K: the point's average exit depth rounded up;
#         every K trained for the seed joins). OPT_PEERS= drops the peers after ORT's transformer optimizer.
#         Full dev set at every batch size in BATCH_SIZES (default "1 32").
#   mnli|qqp: the offline protocols at issue 15's pair-aware defaults: STEPS=train,select bash experiments/pairs.sh
#         TASK SEED must have run (the distilled stage-2 checkpoint and the operating point it chose on the
#         protocol's selection split). bs=32 on the first N32 (default 2,000) evaluation examples and bs=1 on the
#         first N1 (default 500): a dozen configurations x 5 passes of the full 9,815 / 10,430 do not fit a session.
#   CONFIDENCE=C: EAT at the point chosen with eat.select confidence=C (sst2.sh / pairs.sh with CONFIDENCE=C),
#         written to its own results (TAG_runtimes_confidenceC.csv, bench_TAG_runtimes_confidenceC.md): one table
#         per run of the harness, never rows of two selection rules mixed.
#   RUN=NAME: the results of this run of the harness in their own files (TAG_runtimes[_confidenceC]_NAME.csv,
#         bench_..._NAME.md), never mixed with an earlier run's rows (a table takes each seed's last row per label).
#   HEADS=pair (mnli|qqp): EAT is the distilled model with pair-pooled exit heads (HEADS=pair bash
#         experiments/pairs.sh ...) at its own point, results in TAG_runtimes_pair...; the mean-pooled model at its
#         point (same CONFIDENCE, or MEAN_CONFIDENCE) joins as eat_mean_* in its best runtime when both exist.
#   EAT=joint, POINT=NAME (mnli|qqp): the EAT model and point as experiments/pairs.sh names them (pairs_paths.sh): the
#         whole model trained with its heads (EAT=joint ... pairs.sh), the point of another selection (POINT=exits:
#         pairs_seedSEED..._exits); results in TAG_runtimes[_HEADS][_joint][_confidenceC][_POINT][_RUN].
# Usage: bash experiments/runtimes.sh sst2|mnli|qqp SEED
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: runtimes.sh sst2|mnli|qqp SEED}
SEED=${2:?usage: runtimes.sh sst2|mnli|qqp SEED}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
case ${HEADS:-}:$TASK in :*|pair:mnli|pair:qqp) ;;
  *) echo "HEADS=$HEADS: allowed values are pair (tasks mnli, qqp) or unset" >&2; exit 2 ;; esac
CONF=${CONFIDENCE:+_confidence$CONFIDENCE}
J=
case $TASK in
  sst2) EAT=outputs/sst2/eat_seed$SEED/checkpoints/best.ckpt; COMMON=(seed=$SEED); TAG=sst2
        OP=experiments/results/sst2_select/seed$SEED${CONF:-}/operating_point.yaml
        MAKE="STEPS=train,select bash experiments/sst2.sh $SEED" ;;
  mnli|qqp) T=$TASK O=outputs R=experiments/results; EAT=${EAT:-distill}
            source experiments/pairs_paths.sh
            pair_paths $SEED  # the EAT model (E1) and its point (OP), named as pairs.sh names them
            EAT=$E1; COMMON=(seed=$SEED experiment=${TASK}_offline); TAG=${TASK}_offline
            MAKE="${POINT:+POINT=$POINT }STEPS=train,select bash experiments/pairs.sh $TASK $SEED"
            [ -n "$J" ] && MAKE="EAT=joint STAGE2=joint $MAKE" ;;
  *) echo "task=$TASK: allowed values are sst2, mnli, qqp" >&2; exit 2 ;;
esac
[ -n "${CONF:-}" ] && MAKE="CONFIDENCE=$CONFIDENCE $MAKE"
[ -n "${HEADS:-}" ] && MAKE="HEADS=$HEADS $MAKE"
OUT=${TAG}_runtimes${HEADS:+_$HEADS}$J${CONF:-}${POINT:+_$POINT}${RUN:+_$RUN}
for f in $EAT $OP; do
  [ -f $f ] || { echo "error: $f not found: run $MAKE first" >&2; exit 2; }
done

CONFIGS=(--config hf_fp32 mechanism=none peer=hf_static
  --config static_eager mechanism=none
  --config hf_int8 mechanism=none peer=hf_int8
  --config ort_fp32 mechanism=none peer=ort_fp32
  --config ort_int8 mechanism=none peer=ort_int8)
# ORT's transformer optimizer before INT8 (fused attention; OPT_PEERS= drops them)
[ -n "${OPT_PEERS-1}" ] && CONFIGS+=(--config ort_int8_opt mechanism=none peer=ort_int8_opt)
# the truncated peers, each K that experiments/train_truncated.sh has trained ([TASK=mnli|qqp] ... SEED K)
TR=outputs/sst2/truncated_k; [ $TASK = sst2 ] || TR=outputs/${TASK}_truncated_k
for TRUNC in $(ls -d ${TR}*_seed$SEED 2>/dev/null || true); do
  K=${TRUNC#$TR}; K=${K%_seed*}
  CKPT=$TRUNC/checkpoints/best.ckpt
  [ -f $CKPT ] || continue  # still training
  CONFIGS+=(--config truncated_k$K mechanism=none peer=truncated model.keep_layers=$K ckpt_path=$CKPT
    # and as a user would deploy the smaller model: exported whole to ONNX Runtime INT8, like peer ort_int8
    --config truncated_k${K}_ort_int8 mechanism=none peer=ort_int8 model.keep_layers=$K ckpt_path=$CKPT)
  [ -n "${OPT_PEERS-1}" ] && CONFIGS+=(
    --config truncated_k${K}_ort_int8_opt mechanism=none peer=ort_int8_opt model.keep_layers=$K ckpt_path=$CKPT)
done
CONFIGS+=(--config eat_eager operating_point=$OP
  --config eat_int8 operating_point=$OP runtime=int8
  --config eat_ort operating_point=$OP runtime=ort
  --config eat_ort_int8 operating_point=$OP runtime=ort_int8
  # the per-layer sessions with one symmetric INT8 scale per token (runtime.activation=row, batch-invariant)
  --config eat_ort_int8_row operating_point=$OP runtime=ort_int8 runtime.activation=row)
# the whole forward as one ORT graph (runtime.graph=whole, eat/whole_graph.py: exits and pruning inside the graph);
# it runs exits by confidence and pruning of single sentences: a pair task's point joins only when it prunes nothing
# (the points of 3.2 are exits alone), a point with segment-wise pruning keeps the per-layer sessions
PRUNES=$($PY -c "import sys, yaml; print(int(bool(yaml.safe_load(open(sys.argv[1]))['mechanism'].get('prune'))))" $OP)
{ [ $TASK = sst2 ] || [ $PRUNES = 0 ]; } && CONFIGS+=(--config eat_ort_whole operating_point=$OP runtime=ort runtime.graph=whole
  --config eat_ort_int8_whole operating_point=$OP runtime=ort_int8 runtime.graph=whole
  # batch-invariant INT8 with one symmetric scale per token (runtime.activation=row, fewer ops than token)
  --config eat_ort_int8_whole_row operating_point=$OP runtime=ort_int8 runtime.graph=whole runtime.activation=row)
# On a CPU without VNNI runtime.int8_weights=auto gives `row` int8 weights on 7 bits (s7: exact there); beside them
# in the fastest runtime, the uint8 ones (u8, exact, slower) and the 8-bit int8 ones (s8: ORT's u8s8 kernel
# saturates there), for the price of exactness
VNNI=$($PY -c "from eat.runtimes import cpu_has_vnni; print(int(cpu_has_vnni()))")
for W in u8 s8; do
  [ $VNNI = 0 ] && { [ $TASK = sst2 ] || [ $PRUNES = 0 ]; } && CONFIGS+=(--config eat_ort_int8_whole_row_$W
    operating_point=$OP runtime=ort_int8 runtime.graph=whole runtime.activation=row runtime.int8_weights=$W)
done
# HEADS=pair: the mean-pooled distilled model at its own point, in its fastest runtime, beside the pair-pooled one
E_MEAN=outputs/${TASK}_eat_distill_seed$SEED/checkpoints/best.ckpt
MC=${MEAN_CONFIDENCE-${CONFIDENCE:-}}  # MEAN_CONFIDENCE= : the mean-pooled model's confidence-0 point instead
OP_MEAN=experiments/results/${TAG}_select/pairs_seed$SEED${MC:+_confidence$MC}/operating_point.yaml
[ -n "${HEADS:-}" ] && [ -f $E_MEAN ] && [ -f $OP_MEAN ] && CONFIGS+=(--config eat_mean_ort_int8_whole_row
  operating_point=$OP_MEAN ckpt_path=$E_MEAN runtime=ort_int8 runtime.graph=whole runtime.activation=row)
# INT8 with the FFN output projection left in fp32 (closer agreement with fp32, slower; FFN_FP32=1 adds them)
[ -n "${FFN_FP32:-}" ] && CONFIGS+=(
  --config eat_int8_ffn_fp32 operating_point=$OP runtime=int8 "runtime.fp32_linears=[ffn_out,head,heads]"
  --config eat_ort_int8_ffn_fp32 operating_point=$OP runtime=ort_int8 "runtime.fp32_linears=[ffn_out]")
# The INT8 runtimes' earlier activation scheme (one scale per call, batch-dependent), for the record (TENSOR_SCHEME= drops it)
[ -n "${TENSOR_SCHEME-1}" ] && CONFIGS+=(--config eat_int8_tensor operating_point=$OP runtime=int8 runtime.activation=tensor
  --config eat_ort_int8_tensor operating_point=$OP runtime=ort_int8 runtime.activation=tensor)
[ -n "${TENSOR_SCHEME-1}" ] && { [ $TASK = sst2 ] || [ $PRUNES = 0 ]; } && CONFIGS+=(
  --config eat_ort_int8_whole_tensor operating_point=$OP runtime=ort_int8 runtime.graph=whole runtime.activation=tensor)

bench() {  # bench BATCH_SIZES [eat.bench args...]
  local bs=$1; shift
  $PY -m eat.bench --ckpt $EAT --task $TASK --glue $GLUE --batch-sizes $bs --passes 5 --common "${COMMON[@]}" \
    "${CONFIGS[@]}" "$@" --results experiments/results/$OUT.csv \
    --predictions experiments/results/predictions/$OUT/seed$SEED --summary experiments/bench_$OUT.md
}
if [ $TASK = sst2 ]; then
  bench "${BATCH_SIZES:-1 32}"
else
  bench 32 --max-examples ${N32:-2000}
  bench 1 --max-examples ${N1:-500}
fi
