#!/bin/bash
# Submits the whole vggft pipeline as a chain of Slurm jobs, each starting
# when the ones it needs ended well (--dependency=afterok):
#
#   extract DATA   job array over --shard I/N  (GPU partition)  -+
#   extract VAL    one job                     (GPU partition)   |
#   merge          the shards into one cache   (CPU partition) <-+ (after the array)
#   train          the head                    (CPU partition)  after merge + VAL
#   finetune       the top of the base         (GPU partition)  after train; --requeue,
#                                                               --signal: checkpoints, resumes
#   predict --eval the report on VAL           (GPU partition)  after finetune
#                                                               (after train with FINETUNE=0:
#                                                               the report is the head's)
#
# Settings are environment variables or NAME=VALUE arguments:
#   scripts/slurm/submit.sh DATA=data/train VAL=data/validation OUT=runs/r1 \
#       WEIGHTS=weights/vgg16_notop.h5 GPU_PARTITION=gpu CPU_PARTITION=cpu
# Prints the job IDs, also written to OUT/jobs.txt; logs go to OUT/logs/.
# A job that fails cancels the jobs after it (--kill-on-invalid-dep=yes); an
# sbatch that fails cancels the jobs this script had submitted (scancel) and
# says so, so that no half chain is left queued. An unknown NAME (a typo) is
# refused with the list of known ones; so are, before any sbatch, tool
# options a job would refuse or that would change the chain (below).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The settings this script reads (below), for NAME=VALUE arguments.
KNOWN="DATA VAL OUT WEIGHTS BIN SHARDS SHARDS_AT_ONCE CPU_PARTITION GPU_PARTITION GPU_GRES EXTRACT_CPUS MERGE_CPUS
TRAIN_CPUS FINETUNE_CPUS PREDICT_CPUS EXTRACT_TIME MERGE_TIME TRAIN_TIME FINETUNE_TIME PREDICT_TIME SIGNAL_LEAD
SBATCH_ARGS EXTRACT_ARGS TRAIN_ARGS FINETUNE_ARGS PREDICT_ARGS FINETUNE_ON FINETUNE"
for arg in "$@"; do
    case $arg in
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        cat <<'HELP'

Settings (default in brackets):
  DATA              training images, one subfolder per class [required]
  VAL               validation images [none: no validation cache, no report]
  OUT               caches, models, reports, logs [slurm-run]
  WEIGHTS           FILE | imagenet | random [imagenet]
  BIN               the tools, on a file system every node sees [the checkout's build/]
  SHARDS            extraction array width, --shard I/N [4]
  SHARDS_AT_ONCE    at most this many shards running at once [no limit]
  GPU_PARTITION     extract, finetune, predict [gpu]
  CPU_PARTITION     merge, train [cpu]
  GPU_GRES          the GPU request of GPU jobs; empty for none [--gres=gpu:1]
  FINETUNE          1 | 0: 0 stops after the head (no finetune job; the
                    report evaluates the head on the base of WEIGHTS) [1]
  FINETUNE_ON       gpu | cpu: where finetune runs [gpu]
  EXTRACT_CPUS MERGE_CPUS TRAIN_CPUS FINETUNE_CPUS PREDICT_CPUS
                    --cpus-per-task; the tools get --threads to match [8 1 8 8 8]
  EXTRACT_TIME MERGE_TIME TRAIN_TIME FINETUNE_TIME PREDICT_TIME
                    --time [04:00:00 01:00:00 02:00:00 12:00:00 01:00:00]
  SIGNAL_LEAD       SIGTERM this many seconds before a time limit: the tools
                    save their state and the job requeues [300]
  SBATCH_ARGS       more sbatch options for every job (--account, --qos, --mem) [none]
  EXTRACT_ARGS TRAIN_ARGS FINETUNE_ARGS PREDICT_ARGS
                    each tool's own options, checked before any sbatch; not
                    those the chain sets (--data, --cache, --out, --head,
                    --weights, --threads, --shard, --resume...) [none]
HELP
        exit 0
        ;;
    [A-Z]*=*)
        name=${arg%%=*}
        case " $(echo $KNOWN) " in
        *" $name "*) export "$name=${arg#*=}" ;;
        *) echo "submit.sh: unknown setting '$name' (a typo?); known: $(echo $KNOWN)" >&2; exit 2 ;;
        esac
        ;;
    *) echo "submit.sh: expected NAME=VALUE, got '$arg' (--help)" >&2; exit 2 ;;
    esac
done

if [ -z "${DATA:-}" ]; then echo "submit.sh: DATA=DIR is required: the training images, one subfolder per class" >&2; exit 2; fi
VAL=${VAL:-}                      # validation images (none: no val cache, no report)
OUT=${OUT:-slurm-run}             # caches, models, reports, logs
WEIGHTS=${WEIGHTS:-imagenet}      # FILE | imagenet | random
BIN=${BIN:-$repo/build}           # the tools (a build every node can run)
SHARDS=${SHARDS:-4}               # extraction array width (--shard I/N)
SHARDS_AT_ONCE=${SHARDS_AT_ONCE:-}  # at most this many shards running at once (empty: no limit)
CPU_PARTITION=${CPU_PARTITION:-cpu}
GPU_PARTITION=${GPU_PARTITION:-gpu}
GPU_GRES=${GPU_GRES---gres=gpu:1}  # the GPU request of GPU jobs (set empty for none)
# finetune trains its conv base and head on the GPU: by default
# it goes to the GPU partition; FINETUNE_ON=cpu where GPUs are scarce.
FINETUNE_ON=${FINETUNE_ON:-gpu}   # gpu | cpu
FINETUNE=${FINETUNE:-1}           # 0: stop after the head (as pipeline.mk's FINETUNE=0)
case $FINETUNE in 0 | 1) ;; *) echo "submit.sh: FINETUNE must be 1 or 0, got '$FINETUNE'" >&2; exit 2 ;; esac
case $FINETUNE_ON in cpu | gpu) ;; *) echo "submit.sh: FINETUNE_ON must be cpu or gpu, got '$FINETUNE_ON'" >&2; exit 2 ;; esac
EXTRACT_CPUS=${EXTRACT_CPUS:-8} MERGE_CPUS=${MERGE_CPUS:-1} TRAIN_CPUS=${TRAIN_CPUS:-8}
FINETUNE_CPUS=${FINETUNE_CPUS:-8} PREDICT_CPUS=${PREDICT_CPUS:-8}
EXTRACT_TIME=${EXTRACT_TIME:-04:00:00} MERGE_TIME=${MERGE_TIME:-01:00:00} TRAIN_TIME=${TRAIN_TIME:-02:00:00}
FINETUNE_TIME=${FINETUNE_TIME:-12:00:00} PREDICT_TIME=${PREDICT_TIME:-01:00:00}
SIGNAL_LEAD=${SIGNAL_LEAD:-300}   # SIGTERM this many seconds before a time limit: the tools save and requeue
SBATCH_ARGS=${SBATCH_ARGS:-}      # more sbatch options for every job (--account, --qos, --mem ...)
EXTRACT_ARGS=${EXTRACT_ARGS:-} TRAIN_ARGS=${TRAIN_ARGS:-} FINETUNE_ARGS=${FINETUNE_ARGS:-} PREDICT_ARGS=${PREDICT_ARGS:-}

[ -d "$DATA" ] || { echo "submit.sh: DATA=$DATA: no such folder" >&2; exit 2; }
[ -z "$VAL" ] || [ -d "$VAL" ] || { echo "submit.sh: VAL=$VAL: no such folder" >&2; exit 2; }
for tool in extract train $([ "$FINETUNE" = 0 ] || echo finetune); do
    [ -x "$BIN/$tool" ] || { echo "submit.sh: $BIN/$tool not found: build it (make) or set BIN" >&2; exit 2; }
done
[[ $SHARDS =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: SHARDS=$SHARDS: want a count >= 1" >&2; exit 2; }
predict=1
if [ -z "$VAL" ]; then predict=0; echo "note: no VAL: no validation cache and no report"
elif [ ! -x "$BIN/predict" ]; then predict=0; echo "note: $BIN/predict not found: no report"; fi

abs() { realpath -m -- "$1"; }
DATA=$(abs "$DATA") OUT=$(abs "$OUT") BIN=$(abs "$BIN")
if [ -n "$VAL" ]; then VAL=$(abs "$VAL"); fi
case $WEIGHTS in
imagenet)
    # Each job reads Keras's file there, downloading it when it is missing:
    # compute nodes often have no network, and every job would then fail.
    # (VGG19 through EXTRACT_ARGS --model vgg19 wants its own file.)
    kf=${KERAS_HOME:-$HOME/.keras}/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
    case " $EXTRACT_ARGS " in *vgg19*) kf=${kf/vgg16/vgg19} ;; esac
    [ -f "$kf" ] || echo "note: WEIGHTS=imagenet: $kf is not there yet: each job downloads it, which fails on nodes" \
        "without network; copy Keras's file there first, or give WEIGHTS=FILE (README, 'Weights without network access')" >&2
    ;;
random) ;;
*)
    WEIGHTS=$(abs "$WEIGHTS")
    [ -f "$WEIGHTS" ] || { echo "submit.sh: WEIGHTS=$WEIGHTS: no such file (or imagenet, random)" >&2; exit 2; }
    ;;
esac
# OUT inside an image folder: its caches and logs would be read as a class
# (extract refuses it, but only once its job runs). As make refuses it.
for d in "$DATA" ${VAL:+"$VAL"}; do
    case $OUT/ in "$d"/*) echo "submit.sh: OUT=$OUT lies inside the image folder $d: put OUT elsewhere" >&2; exit 2 ;; esac
done
# sbatch reads % in --output's path as a pattern (%j, %A...): the logs would
# land elsewhere.
case $OUT in *%*) echo "submit.sh: OUT=$OUT: a % in it would be read by sbatch as a pattern; use a name without" >&2; exit 2 ;; esac
# Each tool's own options, read as the job scripts read them (common.sh,
# vggft_words: quotes honoured), checked now: a bad one would otherwise fail
# its job hours later, after the extraction. First the options the chain
# sets itself or that do not go with it (chain_refuses, below): the tools
# would accept them in a --summary check and then fail in the job ("for
# --summary only", both --val-cache and --validation-split) or silently
# change the chain (a second --out or --head wins over the chain's own path,
# a --shard makes every array task extract the same shard). Then the tool
# itself: --summary parses every option, then only prints the model; predict
# has none, so it runs as its job runs it, on files that do not exist, and
# its usage errors (exit 2: unknown option, bad value, options that do not go
# together) come before it opens any file (a missing model is exit 1).
# shellcheck source=scripts/slurm/common.sh
source "$here/common.sh"

# chain_refuses TOOL OPTION VALUE: why the chain refuses OPTION (with VALUE,
# its next word or what follows its '=') in TOOL's *_ARGS
# (from the job scripts and the tools' --help); nothing when it may be given.
# --overwrite (extract) and --resume-if-same (train, finetune) may: a flag the
# chain gives too changes nothing, and --resume-if-same replaces the
# requeue's --resume (common.sh, vggft_resume_flag).
# 0 when the words of the *_ARGS being checked give --validation-split a
# value above 0 (either form; the last one given counts, as in the tools).
val_split_given() {
    local i v="" w
    for ((i = 0; i < ${#words[@]}; i++)); do
        w=${words[i]}
        if [ "$w" = --validation-split ]; then v=${words[i + 1]:-}; elif [[ $w == --validation-split=* ]]; then v=${w#*=}; fi
    done
    [ -n "$v" ] && ! [[ $v =~ ^0*\.?0*$ ]]
}

chain_refuses() {
    local cpus=${1^^}_CPUS
    case $1:$2 in
    *:--help | *:-h | *:--version | extract:--summary | train:--summary | finetune:--summary)
        echo "only prints and exits: its job would make nothing" ;;
    extract:--info | extract:--merge | extract:--verify)
        echo "is a command of its own (the chain runs extract --merge itself): the job would extract nothing" ;;
    extract:--data) echo "is set by the chain (DATA, and VAL for the validation cache)" ;;
    extract:--cache) echo "is set by the chain (OUT/cache/train.I, OUT/cache/val)" ;;
    extract:--shard) echo "is set by the chain (array task I extracts --shard I/SHARDS: set SHARDS instead)" ;;
    extract:--weights | finetune:--weights | predict:--weights) echo "is set by the chain (WEIGHTS)" ;;
    extract:--threads | train:--threads | finetune:--threads)
        echo "is set by the chain (to $cpus, its --cpus-per-task: set $cpus instead)" ;;
    train:--cache) echo "is set by the chain (OUT/cache/train)" ;;
    train:--val-cache) echo "is set by the chain (OUT/cache/val, from VAL)" ;;
    train:--out) echo "is set by the chain (OUT/head.h5)" ;;
    train:--validation-split | finetune:--validation-split)
        [ -z "$VAL" ] || [[ $3 =~ ^0*\.?0*$ ]] ||
            echo "goes with no VAL (the chain validates on VAL=$VAL, and the tool takes only one)" ;;
    train:--early-stopping | finetune:--early-stopping | train:--restore-best-weights | finetune:--restore-best-weights)
        # (They watch a validation figure, --monitor's: VAL, or a
        # --validation-split above 0 in the same *_ARGS; --early-stopping 0
        # and --restore-best-weights=0 are off.)
        [ -n "$VAL" ] || { [ "$2" = --early-stopping ] && [[ $3 =~ ^[0-9]+$ ]] && [ "$((10#$3))" = 0 ]; } ||
            [[ " ${words[*]} " =~ \ --restore-best-weights=(0|false|no)\  && $2 = --restore-best-weights ]] ||
            val_split_given || echo "watches a validation figure (--monitor: val_loss unless given): set VAL (or give --validation-split above 0 too)" ;;
    train:--resume | finetune:--resume)
        echo "is added by the chain when a requeued job runs again (a fresh submission starts over; --resume-if-same continues an earlier chain's checkpoint of the same settings)" ;;
    train:--model | train:--input-size | train:--layer | train:--classes)
        echo "is for --summary only (train takes it from the cache: set --model, --input-size, --layer in EXTRACT_ARGS)" ;;
    finetune:--model | finetune:--input-size | finetune:--layer | finetune:--classes | finetune:--class-mode | \
        finetune:--hidden | finetune:--dropout)
        echo "is for --summary only (finetune takes it from the head, OUT/head.h5: set it in EXTRACT_ARGS or TRAIN_ARGS)" ;;
    finetune:--data) echo "is set by the chain (DATA)" ;;
    finetune:--val-data) echo "is set by the chain (VAL)" ;;
    finetune:--cache | finetune:--val-cache)
        echo "does not go with the chain: its finetune trains on the images (--data DATA${VAL:+ --val-data VAL})" ;;
    finetune:--head) echo "is set by the chain (OUT/head.h5, the head its train job writes)" ;;
    finetune:--out) echo "is set by the chain (OUT/model.h5)" ;;
    predict:--model | predict:--head)
        echo "is set by the chain (the report evaluates OUT/model.h5, or with FINETUNE=0 OUT/head.h5)" ;;
    predict:--eval) echo "is set by the chain (VAL)" ;;
    predict:--report) echo "is set by the chain (OUT/eval)" ;;
    predict:--cache) echo "does not go with the chain: its report evaluates the images of VAL (--eval)" ;;
    esac
}

for pair in extract:EXTRACT_ARGS train:TRAIN_ARGS finetune:FINETUNE_ARGS predict:PREDICT_ARGS; do
    tool=${pair%%:*} name=${pair#*:}
    if ! (vggft_words words "${!name}") 2>/dev/null; then
        echo "submit.sh: $name=${!name}: not a valid command line (unbalanced quotes?)" >&2
        exit 2
    fi
    # Tools this chain does not run are not checked (FINETUNE=0 may go with a
    # BIN without finetune; no VAL or no predict: no report).
    [ "$tool" != finetune ] || [ "$FINETUNE" = 1 ] || continue
    [ "$tool" != predict ] || [ "$predict" = 1 ] || continue
    vggft_words words "${!name}"
    # Every word, both --opt VALUE and --opt=VALUE (the tools take both).
    for ((i = 0; i < ${#words[@]}; i++)); do
        w=${words[i]}
        [[ $w == --?* || $w == -h ]] || continue
        if [[ $w == *=* ]]; then value=${w#*=}; else value=${words[i + 1]:-}; fi
        why=$(chain_refuses "$tool" "${w%%=*}" "$value")
        if [ -n "$why" ]; then echo "submit.sh: $name: ${w%%=*} $why; remove it" >&2; exit 2; fi
    done
    if [ "$tool" = predict ]; then
        # As predict.sh runs it (the head's report with FINETUNE=0; random
        # weights: nothing to read or download).
        nx=/nonexistent/vggft-submit-check
        what=(--model "$nx/model.h5")
        [ "$FINETUNE" = 1 ] || what=(--head "$nx/head.h5" --weights random)
        rc=0
        why=$("$BIN/predict" "${what[@]}" --eval "$nx/val" --report "$nx/eval" "${words[@]}" 2>&1 >/dev/null) || rc=$?
        if [ "$rc" -eq 2 ]; then
            echo "submit.sh: $name: ${why:-predict refused these options}" >&2
            exit 2
        fi
    else
        # finetune's check with the cut and size extract's options give the
        # head (--layer block2_pool with --unfreeze block5_conv1 is refused
        # so, not after extract and train).
        from_extract=()
        if [ "$tool" = finetune ]; then
            vggft_words ew "$EXTRACT_ARGS"
            for ((i = 0; i < ${#ew[@]}; i++)); do
                case ${ew[i]} in
                --layer=* | --model=* | --input-size=*) from_extract+=("${ew[i]}") ;;
                --layer | --model | --input-size) from_extract+=("${ew[i]}" "${ew[i + 1]:-}") ;;
                esac
            done
        fi
        if ! why=$("$BIN/$tool" --summary "${from_extract[@]}" "${words[@]}" 2>&1 >/dev/null); then
        echo "submit.sh: $name: ${why:-$tool refused these options}" >&2
        exit 2
        fi
    fi
done
# The folders made here, removed again (when still empty) if nothing is
# submitted: each made by its own mkdir, so that of two runs at once only
# the one that made a folder may remove it.
made=()
mkdir -p -- "$(dirname -- "$OUT")"
for d in "$OUT" "$OUT/cache" "$OUT/logs"; do
    if mkdir -- "$d" 2>/dev/null; then made+=("$d"); fi
done
[ -d "$OUT/cache" ] && [ -d "$OUT/logs" ] || { echo "submit.sh: cannot make $OUT/cache and $OUT/logs" >&2; exit 1; }

# What the job scripts read (sbatch passes the environment on: --export=ALL).
export VGGFT_SLURM_DIR=$here VGGFT_BIN=$BIN VGGFT_WEIGHTS=$WEIGHTS VGGFT_EXTRACT_ARGS=$EXTRACT_ARGS \
    VGGFT_TRAIN_ARGS=$TRAIN_ARGS VGGFT_FINETUNE_ARGS=$FINETUNE_ARGS VGGFT_PREDICT_ARGS=$PREDICT_ARGS

# submit VAR sbatch-args...: submits a job and sets VAR to its ID. Every job:
# logs in OUT/logs, a failed dependency cancels it, the extra SBATCH_ARGS.
# When sbatch fails, the jobs submitted so far are cancelled (they would wait
# for, or feed, jobs that do not exist) and the script stops.
submitted=()
submit() {
    local var=$1 out
    shift
    # shellcheck disable=SC2086
    if ! out=$(sbatch --parsable --export=ALL --kill-on-invalid-dep=yes --chdir="$OUT" $SBATCH_ARGS "$@"); then
        if [ ${#submitted[@]} -gt 0 ]; then
            echo "submit.sh: sbatch failed (its message is above): cancelling the ${#submitted[@]} job(s) already" \
                "submitted: ${submitted[*]}" >&2
            scancel "${submitted[@]}" || echo "submit.sh: scancel failed: cancel ${submitted[*]} by hand" >&2
        else
            echo "submit.sh: sbatch failed (its message is above): nothing was submitted" >&2
            for ((i = ${#made[@]} - 1; i >= 0; i--)); do rmdir "${made[i]}" 2>/dev/null || true; done
        fi
        exit 1
    fi
    out=${out%%;*}
    submitted+=("$out")
    printf -v "$var" '%s' "$out"
}
gpu() { echo "--partition=$GPU_PARTITION $GPU_GRES"; }
cpu() { echo "--partition=$CPU_PARTITION"; }

# shellcheck disable=SC2046
{
    array=0-$((SHARDS - 1))${SHARDS_AT_ONCE:+%$SHARDS_AT_ONCE}
    submit ex $(gpu) --array="$array" --cpus-per-task="$EXTRACT_CPUS" --time="$EXTRACT_TIME" \
        --signal=B:TERM@"$SIGNAL_LEAD" --output="$OUT/logs/extract-%A_%a.out" \
        "$here/extract.sh" "$DATA" "$OUT/cache/train"
    submit merge $(cpu) --dependency=afterok:"$ex" --cpus-per-task="$MERGE_CPUS" --time="$MERGE_TIME" \
        --output="$OUT/logs/merge-%j.out" "$here/merge.sh" "$OUT/cache/train" "$SHARDS"
    after=$merge val_cache="" exval=""
    if [ -n "$VAL" ]; then
        submit exval $(gpu) --cpus-per-task="$EXTRACT_CPUS" --time="$EXTRACT_TIME" --signal=B:TERM@"$SIGNAL_LEAD" \
            --job-name=vggft-extract-val --output="$OUT/logs/extract-val-%j.out" \
            "$here/extract.sh" "$VAL" "$OUT/cache/val"
        after=$merge:$exval val_cache=$OUT/cache/val
    fi
    submit train $(cpu) --dependency=afterok:"$after" --cpus-per-task="$TRAIN_CPUS" --time="$TRAIN_TIME" \
        --signal=B:TERM@"$SIGNAL_LEAD" --output="$OUT/logs/train-%j.out" \
        "$here/train.sh" "$OUT/cache/train" "$val_cache" "$OUT/head.h5"
    finetune="" pred=""
    # What the report evaluates, and after which job: the fine-tuned model,
    # or with FINETUNE=0 the head (on the base of WEIGHTS).
    last=$train evaluated=("$OUT/head.h5" head)
    if [ "$FINETUNE" = 1 ]; then
        submit finetune $($FINETUNE_ON) --dependency=afterok:"$train" --cpus-per-task="$FINETUNE_CPUS" \
            --time="$FINETUNE_TIME" --signal=B:TERM@"$SIGNAL_LEAD" --output="$OUT/logs/finetune-%j.out" \
            "$here/finetune.sh" "$DATA" "$VAL" "$OUT/head.h5" "$OUT/model.h5"
        last=$finetune evaluated=("$OUT/model.h5" model)
    fi
    if [ "$predict" = 1 ]; then
        submit pred $(gpu) --dependency=afterok:"$last" --cpus-per-task="$PREDICT_CPUS" --time="$PREDICT_TIME" \
            --output="$OUT/logs/predict-%j.out" "$here/predict.sh" "${evaluated[0]}" "$VAL" "$OUT/eval" "${evaluated[1]}"
    fi
}
{
    echo "extract=$ex"
    [ -z "$exval" ] || echo "extract_val=$exval"
    echo "merge=$merge"
    echo "train=$train"
    [ -z "$finetune" ] || echo "finetune=$finetune"
    [ -z "$pred" ] || echo "predict=$pred"
} | tee "$OUT/jobs.txt"
vggft_words words "$PREDICT_ARGS"
ext=txt
case " ${words[*]} " in *" --format json "* | *" --format=json "*) ext=json ;; esac
echo "logs: $OUT/logs/; results: $OUT/head.h5${finetune:+, $OUT/model.h5}${pred:+, $OUT/eval_report.$ext}"
