# shellcheck shell=bash
# Sourced by the vggft job scripts (scripts/slurm/*.sh): the submit script
# exports VGGFT_SLURM_DIR, since Slurm runs a copy of each job script from its
# spool folder, and every setting (VGGFT_BIN, VGGFT_OUT, ...).
set -uo pipefail

# This job, as scontrol names it (an array task is JOB_TASK).
vggft_job_id() {
    if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
        echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    else
        echo "${SLURM_JOB_ID}"
    fi
}

# vggft_words VAR "STRING": the array VAR holds the words of STRING, quotes
# and backslashes honoured as a command line's ('a b', "a b", a\ b), and
# nothing run or expanded ($(...), `...`, $X stay as written): xargs(1)
# reads them so. 1 (VAR empty) when the quotes do not balance.
vggft_words() {
    local -n vggft_words_out=$1
    vggft_words_out=()
    printf '%s' "$2" | xargs -r printf '' 2>/dev/null || return 1
    mapfile -d '' -t vggft_words_out < <(printf '%s' "$2" | xargs -r printf '%s\0')
}

# --threads for the CPUs Slurm gave the job: the same count on every run of
# a requeued job, so that a resumed train or finetune ends with the weights
# an uninterrupted run gives (OpenBLAS's sums follow the thread count).
vggft_threads() {
    if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then echo "--threads ${SLURM_CPUS_PER_TASK}"; fi
}

# vggft_resume_flag ARGS...: --resume when this job runs again after a
# requeue (preemption, the time limit, a node failure): SLURM_RESTART_COUNT
# counts the restarts. A fresh submission starts over (the tool replaces an
# older checkpoint). Nothing when ARGS (the tool's own options) already hold
# --resume or --resume-if-same: the tools refuse both together (exit 2), and
# --resume-if-same (README: for job scripts) continues the checkpoint by itself.
vggft_resume_flag() {
    local a
    for a in "$@"; do
        # (A flag's value: 1/true/yes on, 0/false/no off, as the tools read it.)
        case $a in
        --resume | --resume-if-same | --resume=1 | --resume=true | --resume=yes | --resume-if-same=1 | \
            --resume-if-same=true | --resume-if-same=yes) return 0 ;;
        esac
    done
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then echo "--resume"; fi
}

# vggft_run TOOL ARGS...: runs a vggft tool so that a stop signal reaches it.
# Slurm sends --signal=B:TERM@SECONDS (before the time limit) and a
# preemption's SIGTERM to the batch shell; a shell waiting for a foreground
# command would act on it only after the command ends, so the tool runs in
# the background and the shell forwards SIGTERM, SIGINT, SIGUSR1
# (--signal=B:USR1@SECONDS) and SIGHUP to it. A tool
# stopped by a signal saves its state and exits 75 (README, "Stopping and
# resuming"): the job is then requeued, and its next run continues
# (extract resumes its cache by itself; train and finetune get --resume from
# vggft_resume_flag, or continue by their own --resume-if-same). Returns the
# tool's exit status, 0 once requeued.
vggft_run() {
    echo "[$(date '+%F %T')] $(vggft_job_id) on $(hostname -s) (restart ${SLURM_RESTART_COUNT:-0}): $*"
    "$@" &
    local pid=$! rc
    trap 'kill -TERM '"$pid"' 2>/dev/null' TERM
    trap 'kill -INT '"$pid"' 2>/dev/null' INT
    trap 'kill -USR1 '"$pid"' 2>/dev/null' USR1
    trap 'kill -HUP '"$pid"' 2>/dev/null' HUP
    while :; do
        wait "$pid"
        rc=$?
        # A trapped signal interrupts wait (status > 128) while the tool is
        # still saving its state: wait again until it has exited.
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT USR1 HUP
    echo "[$(date '+%F %T')] $1 exited with status $rc"
    if [ "$rc" -eq 75 ]; then
        local id
        id=$(vggft_job_id)
        echo "[$(date '+%F %T')] state saved: requeueing job $id, whose next run resumes"
        # A preemption with PreemptMode=REQUEUE requeues the job itself, and
        # this call then fails harmlessly; without --requeue it fails and the
        # job ends with 75 (its dependants do not start).
        if scontrol requeue "$id"; then return 0; fi
    fi
    return "$rc"
}
