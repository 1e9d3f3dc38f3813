#!/usr/bin/env bash
# Makes build/real/ for the GPU run (scripts/device_run.sh), where the GPU is
# checked on real photos through real weights, the pipeline runs on them end
# to end, and ../shared is not there:
#   weights.h5.xz   ImageNet VGG16 (../shared/tools/imagenet-vgg16), every
#                   float rounded to a 10-bit mantissa (TF32's, round to
#                   nearest even): 27 MB with xz instead of 59 MB, so that it
#                   and build/device.tar.xz fit the device tool's carry limit
#                   (64 MiB). Both devices compute with the same rounded
#                   weights, so GPU-vs-CPU figures are unaffected.
#   photos/         flowers5 training photos: 12 per class (the GPU test
#                   gpu/real_photos_and_imagenet_weights)
#   train/, val/    flowers5: 100 and 20 per class (extract, train, finetune
#                   and predict on the GPU)
#
#   scripts/real_photos.sh      (needs ../shared and python3 with pip: the
#                                weights tool's own venv does the rounding)
#   run(command="bash scripts/device_run.sh", carry=["build/device.tar.xz", "build/real"], ...)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
out=build/real
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
weights=$("$shared/tools/imagenet-vgg16" | tail -1)
py=${XDG_CACHE_HOME:-$HOME/.cache}/vggft-tools/venv/bin/python  # the tool's venv: h5py, numpy
"$py" - "$weights" "$out.tmp/weights.h5" <<'PY'
import shutil, sys
import h5py, numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    def rnd(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype == np.float32:
            a = obj[...].view(np.uint32).astype(np.uint64)
            drop = 13  # 23 - 10 mantissa bits
            a = ((a + (1 << (drop - 1)) - 1 + ((a >> drop) & 1)) >> drop) << drop
            obj[...] = a.astype(np.uint32).view(np.float32)
    f.visititems(rnd)
PY
xz -9 -T1 "$out.tmp/weights.h5"
pick() {  # split, per class, first, count, destination
    for c in "$shared/data/flowers5/$1"/*/; do
        c=$(basename "$c")
        mkdir -p "$4/$c"
        mapfile -t files < <(find "$shared/data/flowers5/$1/$c" -type f -name '*.jpg' | sort)
        cp "${files[@]:$(($2 - 1)):$3}" "$4/$c/"
    done
}
pick train 1 12 "$out.tmp/photos"
pick train 13 100 "$out.tmp/train"
pick val 1 20 "$out.tmp/val"
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out" "$out"/*
