#!/bin/bash
# Job: the dense head from the caches (CPU).
#   sbatch train.sh TRAIN_CACHE VAL_CACHE|"" HEAD.h5
# Stopped by SIGTERM (time limit, preemption) it saves its state, is
# requeued and resumes (common.sh, vggft_run; --resume, or the
# --resume-if-same of TRAIN_ARGS).
#SBATCH --job-name=vggft-train
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
cache=$1 val=$2 head=$3
valopt=()
if [ -n "$val" ]; then valopt=(--val-cache "$val"); fi
vggft_words args "${VGGFT_TRAIN_ARGS:-}"
# shellcheck disable=SC2046
vggft_run "$VGGFT_BIN/train" --cache "$cache" "${valopt[@]}" --out "$head" $(vggft_threads) \
    "${args[@]}" $(vggft_resume_flag "${args[@]}")
