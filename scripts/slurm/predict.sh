#!/bin/bash
# Job: predict --eval, the report on the validation folder.
#   sbatch predict.sh MODEL.h5 VAL PREFIX [model]
#   sbatch predict.sh HEAD.h5 VAL PREFIX head     (the head on the base of VGGFT_WEIGHTS)
# Writes PREFIX_report.txt (.json with --format json), PREFIX_confusion.svg,
# PREFIX_errors.svg and the per-image lines in PREFIX_predictions.txt; an
# earlier chain's are removed first, so that a failed run leaves none beside
# the new model. Exit 3 (some images could not be read: reported, skipped,
# the rest evaluated) counts as done.
#SBATCH --job-name=vggft-predict
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
file=$1 val=$2 prefix=$3 kind=${4:-model}
case $kind in
model) what=(--model "$file") ;;
head) what=(--head "$file" --weights "${VGGFT_WEIGHTS:?}") ;;
*) echo "predict.sh: the 4th argument is model or head, got '$kind'" >&2; exit 2 ;;
esac
vggft_words args "${VGGFT_PREDICT_ARGS:-}"
rm -f "$prefix"_report.txt "$prefix"_report.json "$prefix"_confusion.svg "$prefix"_errors.svg "$prefix"_predictions.txt
tmp=${prefix}_predictions.txt.tmp.$$
"$VGGFT_BIN/predict" "${what[@]}" --eval "$val" --report "$prefix" "${args[@]}" >"$tmp"
rc=$?
if [ "$rc" -eq 3 ]; then rc=0; fi
echo "predict exited with status $rc"
if [ "$rc" -eq 0 ]; then
    mv -f "$tmp" "$prefix"_predictions.txt
    [ -f "${prefix}_report.txt" ] && cat "${prefix}_report.txt"
else
    rm -f "$tmp"
fi
exit "$rc"
