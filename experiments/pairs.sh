#!/usr/bin/env bash
# Issue 15: EAT on sentence pairs (MNLI-m, QQP) under the offline protocols, one seed; RESULTS section 3.
#   train:    static fine-tune; stage 2 (exit heads on the frozen backbone, the namesake active at the pair-aware
#             defaults) without and with self-distillation (mechanism.exit.distill=$DISTILL, default 0.5), each
#             STAGE2_EPOCHS (default 1) epochs: only the heads train, and one epoch of MNLI's 8,832 pairs costs
#             ~12 minutes of this 2-core CPU
#   heads:    per-layer exit-head tables of the stage-2 models there are (experiments/exit_heads.py; with HEADS, the
#             mean-pooled distilled model beside it; HEADS_MECHANISM=exit: the heads without pruning)
#   select:   the operating point of the distilled model, chosen on the protocol's selection split (grid=pairs)
#   bench:    static, HF static and EAT at that point, declared harness: bs=32 on the full evaluation split
#             (or its first N32), bs=1 on its first N1 (default 2,000) examples; at bs=32 also the same point with
#             mechanism.exit.trim_padding=false (exits keep the batch's padding) (BENCH_HF=0: without HF; the
#             runtimes table, experiments/runtimes.sh, times it against every peer). MNLI pairs cost ~15 ms/example
#             here: 3 configurations x 5 passes of the full 9,815 at bs=32 take ~40 minutes
#   ablation: at the chosen point (if it is the namesake; else the namesake's defaults), each part switched off in turn (same harness, bs=32, first NA examples,
#             default all): pair-aware pruning (segments=false), the window below 512 (min_length=0) with and
#             without global [SEP]s, distillation (the other stage-2 model), and all of them (the old namesake)
# Usage: bash experiments/pairs.sh mnli|qqp SEED [HYDRA OVERRIDES for every step...]
#        (STEPS=train,heads,select,bench,ablation; STAGE2=distill: train only the distilled stage-2 model, which is
#        all that select and bench use; STAGE2=none: only the static model, e.g. before a stage 2 that takes
#        overrides the static run must not (QQP's trainer.max_steps=300); HEADS=pair: the distilled model's exit heads read the two segments
#        (mechanism.exit.pooling=pair), in <task>_eat_distill_pair_seedSEED, its point in pairs_seedSEED_pair;
#        OUT=outputs root; CONFIDENCE=C: select with eat.select
#        confidence=C into pairs_seedSEED_confidenceC, and bench/ablation use that point; BENCH_BS
#        (default "32 1"): the bench's batch sizes; with HEADS the bench also runs the mean-pooled model at its point;
#        EAT=joint: the EAT model is the whole static model trained with its exit heads, the static model as teacher
#        (experiment=eat_joint), in <task>_eat_joint[_HEADS]_seedSEED, its point in pairs_seedSEED[_HEADS]_joint;
#        STAGE2=joint trains it); REF=static: select measures the budget against the static fine-tune
#        (eat.select reference=), not the EAT checkpoint's own final head, point in ..._refstatic; GRID: select's
#        grid (default pairs); POINT=NAME: the point's folder gets the suffix _NAME, e.g. for a selection over
#        part of the grid: POINT=exits SELECT_ARGS="~grid.namesake")
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:?usage: pairs.sh mnli|qqp SEED}
SEED=${2:?usage: pairs.sh mnli|qqp SEED}
shift 2
case $T in mnli|qqp) ;; *) echo "task=$T: allowed values are mnli, qqp" >&2; exit 2 ;; esac
STEPS=${STEPS:-train,heads,select,bench,ablation}
GLUE=${EAT_GLUE_DIR:-../shared/data/glue}
O=${OUT:-outputs}
PY=.venv/bin/python
R=${RESULTS:-experiments/results}  # where the CSVs go; summaries (markdown) go to S
S=${SUMMARIES:-experiments}
EAT=${EAT:-distill}
source experiments/pairs_paths.sh
pair_paths $SEED
H=(); [ -n "${HEADS:-}" ] && H=(mechanism.exit.pooling=$HEADS)
EXP=experiment=${T}_offline
C=(seed=$SEED data.dir=$GLUE trainer.enable_progress_bar=false "eval_batch_sizes=[32]" results_csv=$R/${T}_offline.csv "$@")

EPOCHS=trainer.max_epochs=${STAGE2_EPOCHS:-1}
if [[ $STEPS == *train* ]]; then
  [ -f $STATIC ] || $PY train.py $EXP model=minilm_l6 mechanism=none "${C[@]}" hydra.run.dir=${STATIC%/checkpoints/*}
  [ -f $E0 ] || [[ ${STAGE2:-plain,distill} != *plain* ]] || \
    $PY train.py "experiment=[${T}_offline,eat_stage2]" init_ckpt=$STATIC "${C[@]}" $EPOCHS hydra.run.dir=${E0%/checkpoints/*}
  [ -f $E1 ] || [ $EAT != joint ] || [[ ${STAGE2:-} != *joint* ]] || $PY train.py "experiment=[${T}_offline,eat_joint]" \
    init_ckpt=$STATIC "${H[@]}" "${C[@]}" hydra.run.dir=${E1%/checkpoints/*}
  [ -f $E1 ] || [ $EAT != distill ] || [[ ${STAGE2:-plain,distill} != *distill* ]] || $PY train.py "experiment=[${T}_offline,eat_stage2]" init_ckpt=$STATIC \
    mechanism.exit.distill=${DISTILL:-0.5} "${H[@]}" "${C[@]}" $EPOCHS hydra.run.dir=${E1%/checkpoints/*}
fi
if [[ $STEPS == *heads* ]]; then
  CFGS=(); [ -f $E0 ] && CFGS+=(--config plain ckpt_path=$E0)
  [ -n "${HEADS:-}" ] && [ -f $E1_MEAN ] && CFGS+=(--config distill ckpt_path=$E1_MEAN)
  $PY experiments/exit_heads.py --common $EXP data.dir=$GLUE seed=$SEED \
    mechanism=${HEADS_MECHANISM:-prune+sparse+exit} "$@" "${CFGS[@]}" --config $EAT${HEADS:+_$HEADS} ckpt_path=$E1 "${H[@]}" \
    --out $R/exit_heads/${T}${HEADS:+_$HEADS}_seed$SEED.csv --summary $S/${T}${HEADS:+_$HEADS}_exit_heads.md
fi
if [[ $STEPS == *select* ]]; then
  $PY -m eat.select grid=${GRID:-pairs} out=$OP candidates=3 ${CONFIDENCE:+confidence=$CONFIDENCE} ${REF:+reference=$STATIC} \
    ${SELECT_ARGS:-} \
    -- $EXP ckpt_path=$E1 seed=$SEED data.dir=$GLUE "${H[@]}" "$@"
fi
EXTRA=("$@")
point() {  # the mechanism overrides of the chosen point, so parts can be switched off on top of them
  $PY -c "import sys, yaml; print(' '.join(o for o in yaml.safe_load(open(sys.argv[1]))['chosen']['overrides']
        if o.startswith('mechanism')))" $OP
}
bench() {  # bench NAME BS [--max-examples N] --config ...
  local name=$1 bs=$2; shift 2
  $PY -m eat.bench --ckpt $E1 --task $T --glue $GLUE --batch-sizes $bs --passes 5 --common $EXP seed=$SEED "${EXTRA[@]}" "$@" \
    --results $R/${T}_$name.csv --predictions $R/predictions/${T}_$name/seed$SEED --summary $S/bench_${T}_$name.md
}
if [[ $STEPS == *bench* ]]; then
  # HEADS=pair: the mean-pooled model at its own point (same CONFIDENCE) in the same run, when it has one
  OP_MEAN=$R/${T}_offline_select/pairs_seed$SEED${CONFIDENCE:+_confidence$CONFIDENCE}/operating_point.yaml; MEAN=()
  # (EAT=distill only: a joint model has its own backbone, so the mean-pooled stage 2 is no peer of it)
  if [ -n "${HEADS:-}" ] && [ $EAT = distill ] && [ -f $OP_MEAN ]; then
    if [ -f $E1_MEAN ]; then MEAN=(--config eat_mean operating_point=$OP_MEAN ckpt_path=$E1_MEAN)
    else echo "pairs.sh: $E1_MEAN not found: the mean-pooled model is left out of this bench" >&2; fi
  fi
  for BS in ${BENCH_BS:-32 1}; do
    LIM=(); [ $BS = 1 ] && LIM=(--max-examples ${N1:-2000}); [ $BS = 32 ] && [ -n "${N32:-}" ] && LIM=(--max-examples $N32)
    HF=(--config hf_static mechanism=none peer=hf_static ckpt_path=$STATIC); [ "${BENCH_HF:-1}" = 0 ] && HF=()
    # bs > 1: the same point with exits keeping the batch's padding (trim_padding=false), to show what re-padding
    # the rows that stay is worth
    NOTRIM=(); [ $BS != 1 ] && NOTRIM=(--config eat${HEADS:+_$HEADS}${J}_no_trim $(point) mechanism.exit.trim_padding=false)
    # static: the static fine-tune's own weights (EAT=joint has moved the backbone)
    bench pairs${HEADS:+_$HEADS}$J $BS "${LIM[@]}" --config static mechanism=none ckpt_path=$STATIC "${HF[@]}" "${MEAN[@]}" \
      --config eat${HEADS:+_$HEADS}$J operating_point=$OP "${NOTRIM[@]}"
  done
fi
if [[ $STEPS == *ablation* ]]; then
  # The chosen point's own overrides when it is the namesake (an operating_point file replaces the whole mechanism
  # block, so parts could not be switched off on top of it); otherwise the namesake at its defaults.
  BASE=($(point)); [[ " ${BASE[*]} " == *" mechanism=prune+sparse+exit "* ]] || BASE=(mechanism=prune+sparse+exit)
  LIM=(); [ -n "${NA:-}" ] && LIM=(--max-examples $NA)
  OLD=(mechanism.prune.segments=false mechanism.sparse.min_length=0 mechanism.sparse.global_sep=false)
  bench pairs_ablation 32 "${LIM[@]}" --config static mechanism=none \
    --config eat "${BASE[@]}" \
    --config no_segments "${BASE[@]}" mechanism.prune.segments=false \
    --config window_sep "${BASE[@]}" mechanism.sparse.min_length=0 \
    --config window_cls "${BASE[@]}" mechanism.sparse.min_length=0 mechanism.sparse.global_sep=false \
    --config no_distill "${BASE[@]}" ckpt_path=$E0 \
    --config old_namesake "${BASE[@]}" ckpt_path=$E0 "${OLD[@]}"
fi
