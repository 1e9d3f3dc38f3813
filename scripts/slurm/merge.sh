#!/bin/bash
# Job: join the shard caches CACHE.0 ... CACHE.N-1 of extract.sh into CACHE.
#   sbatch merge.sh CACHE N
# extract --merge checks that the shards are of one folder and one set of
# settings, each complete, and that none is missing or given twice. The
# shards are kept (delete them once the merged cache is checked; a
# resubmitted chain reuses them).
#SBATCH --job-name=vggft-merge
#SBATCH --requeue
#SBATCH --open-mode=append
# shellcheck source=scripts/slurm/common.sh
source "${VGGFT_SLURM_DIR:?submit with scripts/slurm/submit.sh}/common.sh"
cache=$1 n=$2
shards=()
for ((i = 0; i < n; i++)); do shards+=("$cache.$i"); done
vggft_run "$VGGFT_BIN/extract" --merge "$cache" "${shards[@]}" --overwrite
