#!/usr/bin/env bash
# The pipeline on a built-in default, from a fresh checkout (installs what it
# needs): a generated 3-class image set (checkers, horizontal and vertical
# stripes) ->
# extract (features cached) -> train (dense head) -> finetune (the top conv
# block with the head, augmented) -> report.
#
# Weights: Keras's ImageNet VGG16 when it is in ~/.keras/models (or can be
# downloaded, DEMO_DOWNLOAD=1); otherwise Glorot-random weights, which still
# separate these textures. Everything goes to build/demo/. Set DEMO_DATA=DIR to use your own
# image folder with train/ and validation/ subfolders instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
make -j"$(nproc)"
out=build/demo
mkdir -p "$out"

data=${DEMO_DATA:-}
if [ -z "$data" ]; then
    data=$out/shapes
    if [ ! -d "$data/train" ]; then
        cc -O2 scripts/demo_images.c -o build/demo_images $(pkg-config --cflags --libs libturbojpeg)
        build/demo_images "$data" 100 30
    fi
fi

# Random weights lose the signal through all 13 layers: cut at block3_pool
# then, where random features still separate textures.
weights=random layer=block3_pool lr=1e-4 unfreeze=block3_conv1
if [ -f "${KERAS_HOME:-$HOME/.keras}/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" ] ||
   [ -n "${DEMO_DOWNLOAD:-}" ]; then
    weights=imagenet layer=block5_pool lr=1e-3 unfreeze=block5_conv1
fi
echo "== weights: $weights, features of $layer"
size=${DEMO_SIZE:-96}

echo "== extract: training images"
build/extract --data "$data/train" --cache "$out/cache_train" --weights "$weights" --input-size "$size" --layer "$layer" --overwrite
echo "== extract: validation images"
build/extract --data "$data/validation" --cache "$out/cache_val" --weights "$weights" --input-size "$size" --layer "$layer" --overwrite
build/extract --info "$out/cache_train"

echo "== train: the dense head"
build/train --cache "$out/cache_train" --val-cache "$out/cache_val" --out "$out/head.h5" \
    --optimizer adam --lr "$lr" --epochs 20 --batch 20

echo "== finetune: $unfreeze and up, with the head, augmented images"
build/finetune --data "$data/train" --val-data "$data/validation" --weights "$weights" --head "$out/head.h5" \
    --out "$out/model.h5" --unfreeze "$unfreeze" --optimizer adam --lr 1e-5 --epochs 2 --batch 20

echo "== done: $out/head.h5 and $out/model.h5 (the fine-tuned model); training curves in $out/*.history.svg, confusion matrices in $out/*.confusion.svg"
