#!/bin/bash
# Job: the frozen base's features of an image folder into a cache.
#   sbatch [--array=0-N-1] extract.sh DIR CACHE
# As an array task I of N (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) it
# extracts shard I/N of DIR into CACHE.I (merge.sh joins them); otherwise all
# of DIR into CACHE. A rerun (requeue, resubmission) keeps the records already
# committed and extracts only what is missing. --overwrite: the cache belongs
# to this chain, so one of other settings (a resubmission with other
# EXTRACT_ARGS, WEIGHTS or SHARDS) starts over instead of failing; one of the
# same settings keeps its records (extract --help).
#SBATCH --job-name=vggft-extract
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
dir=$1 cache=$2
shard=()
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    cache=$cache.$SLURM_ARRAY_TASK_ID
    shard=(--shard "$SLURM_ARRAY_TASK_ID/${SLURM_ARRAY_TASK_COUNT:?}")
fi
vggft_words args "${VGGFT_EXTRACT_ARGS:-}"
# shellcheck disable=SC2046  # word splitting of vggft_threads is intended
vggft_run "$VGGFT_BIN/extract" --data "$dir" --cache "$cache" "${shard[@]}" --weights "$VGGFT_WEIGHTS" \
    $(vggft_threads) "${args[@]}" --overwrite
