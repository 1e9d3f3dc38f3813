#!/bin/bash
# Job: predict --eval, the report on the validation folder.
#   sbatch predict.sh MODEL.h5 VAL PREFIX [model]
#   sbatch predict.sh HEAD.h5 VAL PREFIX head     (the head on the base of VGGFT_WEIGHTS)
# Writes PREFIX_report.txt, PREFIX_confusion.svg, PREFIX_errors.svg and the
# per-image lines in PREFIX_predictions.txt. Exit 3 (some images could not
# be read: reported, skipped, the rest evaluated) counts as done.
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
# shellcheck disable=SC2086
"$VGGFT_BIN/predict" "${what[@]}" --eval "$val" --report "$prefix" $VGGFT_PREDICT_ARGS >"$prefix"_predictions.txt
rc=$?
if [ "$rc" -eq 3 ]; then rc=0; fi
echo "predict exited with status $rc"
[ -f "${prefix}_report.txt" ] && cat "${prefix}_report.txt"
exit "$rc"
