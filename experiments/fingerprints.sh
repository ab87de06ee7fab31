#!/usr/bin/env bash
# Issue 16's check that the plug-in redesign changed no result: every mechanism value evaluated by eval.py on the
# full SST-2 dev set at bs=1 and bs=32, once with the code of REV (a git worktree) and once with this checkout,
# from the same checkpoint; then the sha256 of every predictions file (per example: prediction, exit layer, tokens
# kept, FLOPs) side by side. Writes OUT/{before,after}.sha256 and OUT/compare.md; exits 1 if any file differs.
# Usage: bash experiments/fingerprints.sh CKPT [REV] [OUT]
#   CKPT: a checkpoint with exit heads (experiments/sst2_train.sh 42 makes outputs/sst2/eat_seed42/checkpoints/best.ckpt)
#   REV:  default de96a67 (the last commit before the redesign); OUT: default experiments/results/fingerprints
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=$(realpath "${1:?usage: fingerprints.sh CKPT [REV] [OUT]}")
REV=${2:-de96a67}
OUT=${3:-experiments/results/fingerprints}
GLUE=$(realpath "${EAT_GLUE_DIR:-../shared/data/glue}")
PY="$PWD/.venv/bin/python"  # not realpath: the venv is the link itself
MECHS="none prune sparse exit prune+sparse prune+exit sparse+exit prune+sparse+exit"
WORK=$(mktemp -d /tmp/eat-fingerprints.XXXXXX)
trap 'git worktree remove --force "$WORK/before-tree" 2>/dev/null || true; rm -rf "$WORK"' EXIT
git worktree add --detach "$WORK/before-tree" "$REV" > /dev/null
mkdir -p "$OUT"

evaluate() {  # evaluate TREE SIDE: every mechanism value with the code in TREE (its own train.py, eval.py, conf/, eat/)
  local tree=$1 side=$2
  for m in $MECHS; do
    (cd "$tree" && PYTHONPATH="$tree" "$PY" eval.py ckpt_path="$CKPT" mechanism=$m data.dir="$GLUE" threads=2 \
      "eval_batch_sizes=[1,32]" logger=none trainer.enable_progress_bar=false results_csv="$WORK/$side.csv" \
      hydra.run.dir="$WORK/$side/$m" > "$WORK/$side-$m.log" 2>&1) || { cat "$WORK/$side-$m.log"; exit 1; }
  done
  (cd "$WORK/$side" && sha256sum */predictions_*.csv | sort -k2) > "$OUT/$side.sha256"
}
evaluate "$WORK/before-tree" before
evaluate "$PWD" after

{
  echo "# Predictions files before ($REV) and after the redesign ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- eat conf || echo '+changes'))"
  echo
  echo "eval.py on the full SST-2 dev set, checkpoint \`${1}\`, bs=1 and bs=32, threads=2. sha256 of each file."
  echo
  echo "| file | before | after | same |"
  echo "|---|---|---|---|"
  join -1 2 -2 2 <(sort -k2 "$OUT/before.sha256") <(sort -k2 "$OUT/after.sha256") -a 1 -a 2 -e missing -o 0,1.1,2.1 |
    while read -r f b a; do echo "| $f | ${b:0:16} | ${a:0:16} | $([ "$b" = "$a" ] && echo yes || echo NO) |"; done
} > "$OUT/compare.md"
cat "$OUT/compare.md"
! grep -q "| NO |" "$OUT/compare.md"
