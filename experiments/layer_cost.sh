#!/usr/bin/env bash
# What one layer costs in the fastest static runtime (ORT INT8 after the transformer optimizer), per task and batch
# size: the first K = 6..MIN_K layers of the backbone, each exported and timed in one run of the declared harness
# (eat.bench: interleaved, same batches, median + per-pass range). T(K) = F + K L is what experiments/speedup_bound.py
# fits through two points; here every K is measured, so F (embeddings, classifier, session call) and L (one layer)
# can be read off directly. Only timing matters: the models come from `debug=fast` trainings (5 steps, weights
# barely moved), so the accuracies in the output mean nothing; the graphs and shapes are those of a trained model.
# Why: 3.5d's run (RESULTS) timed the 6- and 5-layer MNLI models at bs=1 within each other's per-pass range, so it
# could not say whether a layer EAT skips saves anything there.
# Usage: [TASK=mnli|qqp|sst2] [MIN_K=3] [N1=300] [N32=1000] [PASSES=9] [RUN=] bash experiments/layer_cost.sh [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-42}
TASK=${TASK:-mnli}
MIN_K=${MIN_K:-3}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
PY=.venv/bin/python
case $TASK in
  sst2) DATA=(task=sst2) ;;
  mnli|qqp) DATA=(experiment=${TASK}_offline) ;;
  *) echo "TASK=$TASK: allowed values are sst2, mnli, qqp" >&2; exit 2 ;;
esac
case $MIN_K in [1-5]) ;; *) echo "MIN_K=$MIN_K: allowed values are 1 to 5 (the backbone has 6 layers)" >&2; exit 2 ;; esac
WORK=outputs/layer_cost/${TASK}_seed$SEED
NAME=${TASK}_layer_cost${RUN:+_$RUN}  # RUN=NAME: its own results files (another host, another day)
CONFIGS=(--config hf_fp32 mechanism=none peer=hf_static)
for K in $(seq 6 -1 "$MIN_K"); do
  CK=$WORK/k$K/checkpoints/best.ckpt
  [ -f "$CK" ] || $PY train.py debug=fast "${DATA[@]}" model=minilm_l6 mechanism=none model.keep_layers=$K seed=$SEED \
    data.dir=$GLUE trainer.enable_progress_bar=false "eval_batch_sizes=[32]" results_csv=$WORK/train.csv \
    hydra.run.dir=$WORK/k$K threads=1 logger=csv
  CONFIGS+=(--config k${K}_ort_int8_opt mechanism=none peer=ort_int8_opt model.keep_layers=$K ckpt_path=$CK)
done
# each batch size in its own call, as runtimes.sh does: bs=32 on the first N32 evaluation examples, bs=1 on N1
for BS in 32 1; do
  N=$([ $BS = 1 ] && echo "${N1:-300}" || echo "${N32:-1000}")
  $PY -m eat.bench --ckpt $WORK/k6/checkpoints/best.ckpt --task $TASK --glue $GLUE --batch-sizes $BS \
    --passes "${PASSES:-9}" --common seed=$SEED "${DATA[@]}" "${CONFIGS[@]}" --max-examples "$N" \
    --results experiments/results/$NAME.csv --summary experiments/bench_$NAME.md
done
