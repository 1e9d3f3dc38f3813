#!/bin/bash
# Job: predict --eval, the report on the validation folder.
#   sbatch predict.sh MODEL.h5 VAL PREFIX
# Writes PREFIX_report.txt, PREFIX_confusion.svg, PREFIX_errors.svg and the
# per-image lines in PREFIX_predictions.txt. Exit 3 (some images could not
# be read: reported, skipped, the rest evaluated) counts as done.
#SBATCH --job-name=vggft-predict
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
model=$1 val=$2 prefix=$3
# shellcheck disable=SC2086
"$VGGFT_BIN/predict" --model "$model" --eval "$val" --report "$prefix" $VGGFT_PREDICT_ARGS >"$prefix"_predictions.txt
rc=$?
if [ "$rc" -eq 3 ]; then rc=0; fi
echo "predict exited with status $rc"
[ -f "${prefix}_report.txt" ] && cat "${prefix}_report.txt"
exit "$rc"
