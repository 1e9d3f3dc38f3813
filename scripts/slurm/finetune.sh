#!/bin/bash
# Job: fine-tune the top of the base with the head, from the images (GPU).
#   sbatch finetune.sh DATA VAL|"" HEAD.h5 MODEL.h5
# Stopped by SIGTERM (--signal=B:TERM@SECONDS before the time limit, a
# preemption, scancel --batch --signal=TERM) it checkpoints between two steps,
# is requeued and resumes from MODEL.ckpt with --resume (or with the
# --resume-if-same of FINETUNE_ARGS, never both): on the same
# --cpus-per-task (--threads) it ends with the weights of an uninterrupted run.
#SBATCH --job-name=vggft-finetune
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
data=$1 val=$2 head=$3 model=$4
valopt=()
if [ -n "$val" ]; then valopt=(--val-data "$val"); fi
vggft_words args "${VGGFT_FINETUNE_ARGS:-}"
# shellcheck disable=SC2046
vggft_run "$VGGFT_BIN/finetune" --data "$data" "${valopt[@]}" --weights "$VGGFT_WEIGHTS" --head "$head" \
    --out "$model" $(vggft_threads) "${args[@]}" $(vggft_resume_flag "${args[@]}")
