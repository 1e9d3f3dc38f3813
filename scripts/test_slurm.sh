#!/bin/bash
# make test-slurm: the job chain of scripts/slurm/ against a real Slurm.
#
# As root: installs Debian's slurm-wlm and munge when missing, starts a
# one-node cluster of its own (munged, slurmctld, slurmd on free ports, every
# state, log, pid and socket file in a temporary folder; a "cpu" and a "gpu"
# partition on the same node, the GPU request emptied since there is no GPU),
# and runs scripts/slurm/submit.sh on a small generated image set (3 classes,
# 48x48, random weights cut at block2_pool) with a 3-task extraction array.
# While finetune runs it sends the job SIGTERM (scancel --batch
# --signal=TERM, what a preemption or --signal before the time limit does):
# finetune saves its state and exits 75, the job requeues itself and resumes
# (by the --resume-if-same of its FINETUNE_ARGS, which job scripts are
# advised to pass: the requeue must not add a --resume beside it, which the
# tool refuses). Checks that every job completed in dependency order, that the
# array's shards were merged into a complete cache, that the finetune job ran
# twice and wrote the very bytes an uninterrupted finetune writes, and that
# predict wrote its report; that submit.sh refuses, before any sbatch, tool
# options a job would refuse or that the chain sets itself; that FINETUNE=0
# runs with a BIN that has no finetune. Stops everything it started, by
# process id.
#
#   scripts/test_slurm.sh [BIN]      (BIN: the built tools, default build)
# VGGFT_SLURM_KEEP=1 keeps the temporary folder (logs) afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-${VGGFT_BIN:-build}}")
t0=$(date +%s)
say() { echo "[test-slurm $(($(date +%s) - t0))s] $*"; }
fail() {
    echo "test-slurm: FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || { echo "test_slurm.sh: run it as root (it starts munged, slurmctld and slurmd)" >&2; exit 2; }
for tool in extract train finetune; do
    [ -x "$BIN/$tool" ] || { echo "test_slurm.sh: $BIN/$tool not found (make first)" >&2; exit 2; }
done
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null ||
    ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

work=$(mktemp -d /tmp/vggft-slurm.XXXXXX)
chmod 700 "$work"
pids=()  # daemons we started, stopped in reverse order
jobs_submitted=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$jobs_submitted" ] && [ -n "${SLURM_CONF:-}" ]; then
        # shellcheck disable=SC2086
        scancel $jobs_submitted 2>/dev/null
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "${pids[i]}" 2>/dev/null
        wait "${pids[i]}" 2>/dev/null
    done
    # A job's processes outlive it when its batch shell died first (the
    # linuxproc tracker follows the process tree): every process that names
    # this test's folder is one of ours.
    local p left=()
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" != $$ ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$work/" && left+=("$p")
    done
    if [ ${#left[@]} -gt 0 ]; then
        echo "test-slurm: stopping leftover processes ${left[*]}"
        kill -TERM "${left[@]}" 2>/dev/null
        sleep 2
        kill -KILL "${left[@]}" 2>/dev/null
    fi
    if [ "$rc" -ne 0 ]; then
        echo "--- slurmctld.log (end)"; tail -n 30 "$work/slurmctld.log" 2>/dev/null
        echo "--- slurmd.log (end)"; tail -n 30 "$work/slurmd.log" 2>/dev/null
        for f in "$work"/run/logs/*.out; do [ -f "$f" ] && { echo "--- $f (end)"; tail -n 25 "$f"; }; done
    fi
    if [ "${VGGFT_SLURM_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "test-slurm: files kept in $work"
    else
        rm -rf "$work"
    fi
    say "done (status $rc)"
}
trap cleanup EXIT

# --- a one-node cluster ------------------------------------------------------
free_port() {
    local p
    for ((p = $1; p < $1 + 500; p++)); do
        if ! ss -Hltn "sport = :$p" | grep -q .; then echo "$p"; return; fi
    done
    fail "no free port from $1"
}
host=$(hostname -s)
ncpu=$(nproc)
ctld_port=$(free_port 26817)
slurmd_port=$(free_port $((ctld_port + 1)))
mkdir -p "$work/state" "$work/spool" "$work/munge"
chmod 700 "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munged --foreground --force --key-file="$work/munge/munge.key" --socket="$work/munge/munge.sock" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed" \
    >"$work/munge/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$work/munge/munge.sock" ] && break; sleep 0.1; done
[ -S "$work/munge/munge.sock" ] || { cat "$work/munge/munged.out"; fail "munged did not start"; }

# cred_expire=10: a requeued job may start again after 11 s instead of
# Slurm's default 121 s (the credential lifetime, plus one).
cat >"$work/slurm.conf" <<EOF
ClusterName=vggfttest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.sock,cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=1000 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || { cat "$work/slurmctld.out"; fail "slurmctld did not start"; }
slurmd -D -N "$host" -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ "$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1)" = idle ] && break; sleep 0.2; done
[ "$(sinfo -h -n "$host" -o %T | head -1)" = idle ] || { sinfo; cat "$work/slurmd.out"; fail "the node is not idle"; }
say "cluster up: $host, $ncpu CPUs, partitions $(sinfo -h -o %P | tr '\n' ' ')(slurmctld :$ctld_port, slurmd :$slurmd_port)"

# --- submit.sh --help names every setting it takes ---------------------------
help=$(scripts/slurm/submit.sh --help)
known=$(sed -n '/^KNOWN="/,/"$/p' scripts/slurm/submit.sh | tr -d '"' | sed 's/^KNOWN=//')
for name in $known; do
    grep -qw -- "$name" <<<"${help#*Settings (default in brackets):}" || fail "submit.sh --help does not describe $name"
done

# --- the data and the chain ---------------------------------------------------
# shellcheck disable=SC2046
cc -O2 scripts/demo_images.c -o "$work/demo_images" $(pkg-config --cflags --libs libturbojpeg)
"$work/demo_images" "$work/img" 20 6 >/dev/null
export DATA=$work/img/train VAL=$work/img/validation OUT=$work/run WEIGHTS=random BIN
export SHARDS=3 CPU_PARTITION=cpu GPU_PARTITION=gpu GPU_GRES=""
export EXTRACT_CPUS=1 MERGE_CPUS=1 TRAIN_CPUS=1 FINETUNE_CPUS=1 PREDICT_CPUS=1
export EXTRACT_TIME=00:10:00 MERGE_TIME=00:10:00 TRAIN_TIME=00:10:00 FINETUNE_TIME=00:20:00 PREDICT_TIME=00:10:00
export EXTRACT_ARGS="--input-size 48 --layer block2_pool"
# (Quoted as on a command line: the job scripts read it as make does.)
export TRAIN_ARGS="--epochs 10 --hidden 0 --optimizer 'adam' --lr 1e-4"
# --resume-if-same, as the README advises for job scripts: the requeued run
# must resume by it alone.
export FINETUNE_ARGS="--unfreeze block2_conv1 --epochs 8 --batch 10 --checkpoint-every 3 --resume-if-same"
export PREDICT_ARGS=""
# Refused before any sbatch, nothing made: a tool option with a typo (the
# tool's own message; predict's too, which has no --summary), an option the
# chain sets itself (its --summary check would pass it: a second --out would
# win over the chain's), one for --summary only, --validation-split with a
# VAL (the tools take only one), an OUT inside DATA.
refused() { # WHAT EXPECTED_TEXT NAME=VALUE...
    local what=$1 want=$2 out
    shift 2
    if out=$(scripts/slurm/submit.sh "$@" 2>&1); then fail "submit.sh accepted $what"; fi
    grep -q -- "$want" <<<"$out" || fail "submit.sh on $what: $out"
}
refused "a TRAIN_ARGS typo" "unknown option '--epoch'" TRAIN_ARGS="--epoch 5"
refused "--out= in TRAIN_ARGS" "TRAIN_ARGS: --out is set by the chain" TRAIN_ARGS="--epochs 2 --out=$work/x.h5"
refused "--input-size in FINETUNE_ARGS" "FINETUNE_ARGS: --input-size is for --summary only" FINETUNE_ARGS="--input-size 48"
refused "--validation-split with VAL" "FINETUNE_ARGS: --validation-split goes with no VAL" \
    FINETUNE_ARGS="--epochs 2 --validation-split 0.2"
if [ -x "$BIN/predict" ]; then
    refused "a PREDICT_ARGS typo" "PREDICT_ARGS: predict: error: unknown option '--formt'" PREDICT_ARGS="--formt json"
fi
refused "--restore-best-weights without VAL" "TRAIN_ARGS: --restore-best-weights watches a validation figure" \
    VAL= TRAIN_ARGS="--restore-best-weights --monitor val_accuracy"
refused "--early-stopping with --validation-split 0" "FINETUNE_ARGS: --early-stopping watches a validation figure" \
    VAL= FINETUNE_ARGS="--early-stopping 3 --validation-split=0.0"
refused "OUT inside DATA" "lies inside the image folder" OUT="$DATA/run"
refused "a stray word in EXTRACT_ARGS" "unexpected argument 'yes'" EXTRACT_ARGS="--reduced-decode yes"
refused "a head cut below the layer to unfreeze" "no such layer in the vgg16 base cut at block2_pool" \
    EXTRACT_ARGS="--layer block2_pool" FINETUNE_ARGS="--unfreeze block5_conv1"
# *_ARGS are read, never run: $(...) stays a word (which the tool refuses).
refused "a command in TRAIN_ARGS" "unexpected argument" TRAIN_ARGS="--epochs 2 \$(touch $work/ran)"
[ ! -e "$work/ran" ] || fail "submit.sh ran a command found in TRAIN_ARGS"
[ ! -e "$DATA/run" ] || fail "a refused submit.sh made $DATA/run"
# sbatch refusing the first job: nothing submitted, no empty OUT left behind.
refused "a partition that does not exist" "nothing was submitted" OUT="$work/nosub" GPU_PARTITION=no_such_partition
[ ! -e "$work/nosub" ] || fail "submit.sh left $work/nosub behind when nothing was submitted"
scripts/slurm/submit.sh
# shellcheck disable=SC1091,SC2154
source "$OUT/jobs.txt"  # extract= extract_val= merge= train= finetune= [predict=]
predict=${predict:-}
# shellcheck disable=SC2154
jobs_submitted="$extract $extract_val $merge $train $finetune $predict"
say "submitted: $(tr '\n' ' ' <"$OUT/jobs.txt")"

field() { scontrol show job -o "$1" | head -1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }
state() { field "$1" JobState; }
ftlog() { find "$OUT/logs" -name 'finetune-*.out' | head -1; }

# --- stop finetune mid-run ----------------------------------------------------
deadline=$(($(date +%s) + 600))
while :; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "finetune did not reach its second epoch in 10 minutes"
    log=$(ftlog)
    if [ "$(state "$finetune")" = RUNNING ] && [ -n "$log" ] && grep -q 'Epoch 2/' "$log"; then break; fi
    s=$(state "$finetune")
    case $s in PENDING | RUNNING | CONFIGURING) ;; *) fail "finetune is $s before it could be stopped" ;; esac
    sleep 0.2
done
say "finetune job $finetune is in epoch 2: scancel --batch --signal=TERM"
scancel --batch --signal=TERM "$finetune"

# --- wait for the chain -------------------------------------------------------
wait_completed() { # JOB...: each ends COMPLETED before $deadline
    local j s
    for j in "$@"; do
        while :; do
            [ "$(date +%s)" -lt "$deadline" ] || fail "job $j is still $(state "$j") after 10 minutes"
            s=$(state "$j")
            [ "$s" = COMPLETED ] && break
            case $s in PENDING | RUNNING | CONFIGURING | COMPLETING | REQUEUED) ;;
            *) fail "job $j ended $s (exit $(field "$j" ExitCode))" ;; esac
            sleep 0.5
        done
    done
}
# shellcheck disable=SC2086
wait_completed $jobs_submitted
# Each array task completed too (the array's own line is one task).
for ((i = 0; i < SHARDS; i++)); do
    s=$(state "${extract}_$i")
    [ "$s" = COMPLETED ] || fail "array task ${extract}_$i is $s"
done
say "every job completed"

# --- checks ---------------------------------------------------------------------
epoch() { date -d "$(field "$1" "$2")" +%s; }
# Dependencies: a job starts after what it depends on ended.
after() { # JOB ENDED_JOB...
    local j=$1 e
    shift
    for e in "$@"; do
        [ "$(epoch "$j" StartTime)" -ge "$(epoch "$e" EndTime)" ] || fail "job $j started before $e ended"
    done
}
array_tasks=()
for ((i = 0; i < SHARDS; i++)); do array_tasks+=("${extract}_$i"); done
after "$merge" "${array_tasks[@]}"
after "$train" "$merge" "$extract_val"
after "$finetune" "$train"
[ -z "$predict" ] || after "$predict" "$finetune"
for ((i = 0; i < SHARDS; i++)); do
    "$BIN/extract" --info "$OUT/cache/train.$i" | grep -q "^shard: *$i/$SHARDS$" ||
        fail "cache/train.$i is not shard $i/$SHARDS"
done
info=$("$BIN/extract" --info "$OUT/cache/train")
grep -q 'state: *complete' <<<"$info" || fail "the merged cache is not complete: $info"
grep -q '^records: *60$' <<<"$info" || fail "the merged cache does not hold the 60 training images: $info"

# The stopped finetune: requeued once, resumed, and the same model as an
# uninterrupted run (same head, settings and --threads).
restarts=$(field "$finetune" Restarts)
[ "$restarts" = 1 ] || fail "finetune job restarts: $restarts, want 1"
log=$(ftlog)
grep -q 'exited with status 75' "$log" || fail "finetune did not stop with status 75 (log $log)"
grep -q 'requeueing job' "$log" || fail "the finetune job did not requeue itself"
# Its own --resume-if-same, and no --resume beside it (the tool refuses both).
grep -q "(restart 1): .*/finetune .* --resume-if-same" "$log" || fail "the requeued finetune lost --resume-if-same"
grep -qE "\(restart [0-9]+\): .*/finetune .* --resume( |$)" "$log" && fail "the requeued finetune got --resume beside --resume-if-same"
grep -q "Resuming from .*model\.ckpt" "$log" || fail "the requeued finetune did not resume from its checkpoint"
grep -q 'exited with status 0' "$log" || fail "the resumed finetune did not end well"
say "finetune was stopped, requeued and resumed; running it uninterrupted for comparison"
mkdir -p "$work/ref"
# shellcheck disable=SC2086
"$BIN/finetune" --data "$DATA" --val-data "$VAL" --weights random --head "$OUT/head.h5" --out "$work/ref/model.h5" \
    --threads 1 $FINETUNE_ARGS --quiet >"$work/ref/finetune.log" 2>&1 || fail "the reference finetune failed"
cmp -s "$work/ref/model.h5" "$OUT/model.h5" || fail "the resumed model differs from the uninterrupted one"
cmp -s <(cut -d, -f1-5 "$work/ref/model.history.csv") <(cut -d, -f1-5 "$OUT/model.history.csv") ||
    fail "the resumed history differs from the uninterrupted one"
say "model.h5 is byte-identical to the uninterrupted run's"
if [ -n "$predict" ]; then
    grep -q 'accuracy' "$OUT/eval_report.txt" || fail "predict wrote no report"
    say "predict: $(grep -m1 'accuracy' "$OUT/eval_report.txt") (random weights on generated images: chance level is what to expect)"
else
    say "no predict binary: the report stage was not submitted"
fi

# --- FINETUNE=0: the chain stops after the head; the report is the head's -------
# On a BIN without finetune, which FINETUNE=0 allows (its options go unchecked).
mkdir -p "$work/bin0"
for tool in extract train predict; do [ ! -x "$BIN/$tool" ] || ln -s "$BIN/$tool" "$work/bin0/$tool"; done
scripts/slurm/submit.sh OUT="$work/run0" FINETUNE=0 BIN="$work/bin0" >"$work/submit0.txt" 2>&1 ||
    fail "FINETUNE=0: $(cat "$work/submit0.txt")"
grep -q '^finetune=' "$work/run0/jobs.txt" && fail "FINETUNE=0 submitted a finetune job: $(cat "$work/run0/jobs.txt")"
# shellcheck disable=SC2046
deadline=$(($(date +%s) + 600)) && wait_completed $(cut -d= -f2 "$work/run0/jobs.txt")
[ ! -e "$work/run0/model.h5" ] || fail "FINETUNE=0 wrote a model"
if [ -n "$predict" ]; then
    grep -q '^predict=' "$work/run0/jobs.txt" || fail "FINETUNE=0 submitted no report"
    grep -q "^Model: $work/run0/head.h5, a head on" "$work/run0/eval_report.txt" ||
        fail "FINETUNE=0: the report is not the head's: $(head -5 "$work/run0/eval_report.txt")"
    say "FINETUNE=0: extract, merge, train and the head's report, no finetune"
fi
say "PASS: array of $SHARDS, merge, train, finetune stopped/requeued/resumed${predict:+, predict} in $(($(date +%s) - t0)) s"
