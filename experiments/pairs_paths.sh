# Sourced by experiments/pairs.sh and experiments/pairs_bench_seeds.sh: where one seed's checkpoints and chosen
# operating point live, so both scripts name them the same way.
# In: T (task), O (outputs root), R (results root), EAT (distill|joint), HEADS, CONFIDENCE, REF, POINT (a suffix
# naming another selection of the same model, e.g. one over another grid) (all optional).
# pair_paths SEED sets STATIC (static fine-tune), E0 (plain stage 2), E1 (the EAT model), E1_MEAN (mean-pooled
# distilled stage 2), J (_joint or empty) and OP (its operating_point.yaml).
pair_paths() {
  local seed=$1
  case $EAT in distill|joint) ;; *) echo "EAT=$EAT: allowed values are distill, joint" >&2; exit 2 ;; esac
  case ${REF:-} in ''|static) ;; *) echo "REF=$REF: allowed values are static (or unset)" >&2; exit 2 ;; esac
  STATIC=$O/${T}_static_seed$seed/checkpoints/best.ckpt
  E0=$O/${T}_eat_seed$seed/checkpoints/best.ckpt
  E1=$O/${T}_eat_${EAT}${HEADS:+_$HEADS}_seed$seed/checkpoints/best.ckpt
  E1_MEAN=$O/${T}_eat_distill_seed$seed/checkpoints/best.ckpt
  J=; [ $EAT = joint ] && J=_joint
  OP=$R/${T}_offline_select/pairs_seed$seed${HEADS:+_$HEADS}$J${CONFIDENCE:+_confidence$CONFIDENCE}${REF:+_ref$REF}${POINT:+_$POINT}/operating_point.yaml
}
