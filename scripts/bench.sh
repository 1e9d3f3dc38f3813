#!/usr/bin/env bash
# Benchmarks (make bench). Prints, from one run on this machine:
#   - the OpenBLAS kernel the executables use and its sgemm rate (1536^3),
#     and the conv layers' rates against it (scripts/bench_conv.c), direct
#     and Winograd layer by layer;
#   - the CPU conv base against Keras 3 / TensorFlow CPU at 150x150 and
#     224x224, interleaved rounds, median and best, and the ratio: the base
#     alone on a batch of 20, and extract end to end (JPEG files -> cache,
#     on ../shared/data/flowers5 when present, else on generated images);
#     ours under the environment's OPENBLAS_CORETYPE and the other case
#     (unset, or Haswell forced);
#   - extract on the GPU when a GPU is usable;
#   - finetune on the CPU at 150x150 (the same images, random weights,
#     block5 + head trainable): images/s from images with the seeds'
#     augmentation and from a block4_pool cache, and where the time goes
#     (finetune's own "Time:" line);
#   - train: seconds per epoch on 3,000 cached 4x4x512 features and the dense
#     layers' GFLOPS as a fraction of the sgemm rate. Where the CPU has
#     AVX-512 but the executables' BLAS kernel is narrower (OPENBLAS_CORETYPE
#     set in the environment), also against the AVX-512 sgemm, as the dense
#     layers use AVX-512 there. Then the fused step of the big layer alone,
#     with the AVX-512 and the AVX2 kernels (scripts/bench_dense.c).
# Environment: BENCH_IMAGES (images per class, default 40), BENCH_THREADS
# (default: all cores), BENCH_ROUNDS (default 3), BENCH_KERAS=0 (no Keras),
# BENCH_EXTRACT=0 (the conv base alone against Keras), BENCH_FINETUNE=0.
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" >/dev/null
threads=${BENCH_THREADS:-$(nproc)}
per_class=${BENCH_IMAGES:-40}
work=$(mktemp -d /tmp/vggft-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

kernel=$(build/train --version | sed -n 's/.*kernel \([A-Za-z0-9]*\).*/\1/p')
echo "== $(build/train --version | sed -n 's/^BLAS: //p')"
echo "== $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores"

# The small C helpers link the library `make` built above: the CUDA build's
# when CUDA is there (build/), else the CPU-only one (build/cpu/).
link_tool() {  # link_tool NAME: scripts/NAME.c -> $work/NAME, linked as make links the tools
    # shellcheck disable=SC2046  # the link line is words
    cc -std=gnu11 -O2 -pthread -I. -Icommon -Ikernels $(pkg-config --cflags openblas hdf5) "scripts/$1.c" \
        -o "$work/$1" $(make -s print-link)
}
# Reference sgemm and per-layer conv rates, with the executables' kernel.
link_tool bench_conv
OPENBLAS_CORETYPE=$kernel "$work/bench_conv" "$threads" | tee "$work/conv.txt"
sgemm=$(sed -n 's/.*( *\([0-9.]*\)).*/\1/p' "$work/conv.txt" | sort -g | tail -1)
echo "sgemm 1536^3: $sgemm GFLOPS (best of the runs above)"
simd=$(build/train --version | sed -n 's/^Dense layers and optimizers: //p')
sgemm512=
if [ "$simd" = AVX-512 ] && ! echo "$kernel" | grep -qiE 'skylakex|cooperlake|sapphirerapids'; then
    sgemm512=$(OPENBLAS_CORETYPE=SkylakeX "$work/bench_conv" "$threads" --sgemm | awk '{print $3}')
    echo "sgemm 1536^3 with OpenBLAS's AVX-512 kernel (SkylakeX): $sgemm512 GFLOPS"
fi

# Direct against Winograd's three tiles, layer by layer, one image per call,
# and the tile conv_method chooses (scripts/bench_base.c layers).
link_tool bench_base
"$work/bench_base" layers 150 3 "$threads"

# --- the CPU conv base against Keras -----------------------------------------------
# The images: flowers5 when ../shared/data is there, else generated JPEGs.
src=../shared/data/flowers5/train
data=$work/images
if [ -d "$src" ]; then
    for d in "$src"/*/; do
        c=$(basename "$d")
        mkdir -p "$data/$c"
        find "$d" -maxdepth 1 -type f | sort | sed -n "1,${per_class}p" | while read -r f; do ln -s "$(realpath "$f")" "$data/$c/"; done
    done
    what="flowers5 ($per_class per class, 224x224 JPEGs)"
else
    cc -O2 scripts/demo_images.c -o "$work/demo_images" $(pkg-config --cflags --libs libturbojpeg)
    "$work/demo_images" "$work/gen" "$per_class" 1 >/dev/null
    data=$work/gen/train
    what="generated images ($per_class per class)"
fi
n_img=$(find -L "$data" -type f | wc -l)

# Ours beside Keras 3 on TensorFlow CPU (scripts/bench_keras.py, in a
# virtual environment made here once; BENCH_KERAS=0 skips it), round by
# round (BENCH_ROUNDS, default 3) so that the machine's drift hits all alike:
#   conv: the frozen base alone on a batch of 20 preprocessed images
#         (scripts/bench_base.c: Winograd as the tools run it, and the direct
#         convolution), seconds per batch;
#   extract: JPEG files -> block5_pool features (ours: build/extract into a
#         cache; Keras: the seeds' load_img + predict), images per second.
# Ours runs under the environment's OPENBLAS_CORETYPE and under the other
# case (issue: our speed must not depend on the kernel a node forces): with
# it unset where the environment sets it, else with Haswell (AVX2) forced as
# some environments do.
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
    env_kernel="OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"; other_kernel="OPENBLAS_CORETYPE unset"
    other() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
else
    env_kernel="OPENBLAS_CORETYPE unset"; other_kernel="OPENBLAS_CORETYPE=Haswell"
    other() { OPENBLAS_CORETYPE=Haswell "$@"; }
fi
kvenv=${XDG_CACHE_HOME:-$HOME/.cache}/vggft/keras-venv  # Keras for the comparisons, made once
compare_with_keras() {
    if [ "${BENCH_KERAS:-1}" != 0 ] && [ ! -x "$kvenv/bin/python" ]; then
        echo "(installing tensorflow-cpu into $kvenv for the comparison: once, a few minutes)"
        { python3 -m venv "$kvenv" && "$kvenv/bin/pip" install -q tensorflow-cpu pillow h5py scipy; } >/dev/null 2>&1 ||
            echo "(could not install tensorflow-cpu: Keras not measured)"
    fi
    local keras=0
    [ -x "$kvenv/bin/python" ] && [ "${BENCH_KERAS:-1}" != 0 ] && keras=1
    local rounds=${BENCH_ROUNDS:-3} log=$work/keras.txt
    : >"$log"
    ours_extract() {  # ours_extract SIZE LABEL [env ...]: one "ours extract" line
        local size=$1 label=$2; shift 2
        rm -rf "$work/cache_cmp"
        "$@" build/extract --data "$data" --cache "$work/cache_cmp" --weights random --input-size "$size" \
            --device cpu --threads "$threads" --quiet |
            sed -n "s/.*(\([0-9.]*\) img\/s).*/ours extract $size ($label): \1 img\/s/p" >>"$log"
    }
    for r in $(seq "$rounds"); do
        echo "  round $r of $rounds" >&2
        for size in 150 224; do
            "$work/bench_base" $size 20 3 "$threads" | sed "s/(winograd)/(winograd, $env_kernel)/" >>"$log"
            other "$work/bench_base" $size 20 3 "$threads" | sed "s/(winograd)/(winograd, $other_kernel)/" >>"$log"
            VGGFT_WINOGRAD=0 "$work/bench_base" $size 20 3 "$threads" | sed "s/(direct)/(direct, $env_kernel)/" >>"$log"
            [ $keras = 1 ] && { "$kvenv/bin/python" scripts/bench_keras.py conv $size 20 3 >>"$log" 2>/dev/null || true; }
            [ "${BENCH_EXTRACT:-1}" = 0 ] && continue
            ours_extract $size "$env_kernel"
            ours_extract $size "$other_kernel" other
            [ $keras = 1 ] && { "$kvenv/bin/python" scripts/bench_keras.py extract $size "$data" 2>/dev/null |
                sed -n 's/^keras extract \([0-9]*\): .* \([0-9.]*\) img\/s$/keras extract \1: \2 img\/s/p' >>"$log" || true; }
        done
    done
    # Per kind of line: the median and the best over the rounds (a conv
    # line's value is its own median of 3 calls), and the speed over
    # Keras's median for the same size and mode.
    awk '{ key = $0; sub(/:.*/, "", key); n[key]++; order[key] = order[key] ? order[key] : ++keys
           if ($NF == "img/s") { v[key, n[key]] = $(NF - 1); rate[key] = 1 } else v[key, n[key]] = $(NF - 4) }
         END { for (k in n) { m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, i] + 0
                   for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
                   mid[k] = a[int((m + 1) / 2)]; best[k] = rate[k] ? a[m] : a[1] }
               for (k in n) { kk = k; sub(/ \(.*/, "", kk); split(kk, w, " "); kr = "keras " w[2] " " w[3]
                   if (rate[k]) printf "  %-62s median %6.1f img/s, best %6.1f", k, mid[k], best[k]
                   else printf "  %-62s median %.3f s, best %.3f s per 20 (%.1f img/s)", k, mid[k], best[k], 20 / mid[k]
                   if ((kr in mid) && k != kr) printf "; %.2fx Keras", rate[k] ? mid[k] / mid[kr] : mid[kr] / mid[k]
                   printf "\n" } }' "$log" | sort -k2,2 -k3,3n -k1,1r
}
echo "the CPU conv base against Keras: $what, $threads thread(s), ${BENCH_ROUNDS:-3} interleaved rounds"
echo "(conv: batch of 20 preprocessed images; extract: JPEG files -> cache, $n_img images):"
compare_with_keras
macs() {  # multiply-adds of VGG16's 13 convs at $1 x $1 (REFERENCE.md: 6.62 G at 150)
    awk -v h="$1" 'BEGIN { c = 3; split("64 64 P 128 128 P 256 256 256 P 512 512 512 P 512 512 512 P", L, " ");
        for (i = 1; i <= 18; i++) { if (L[i] == "P") { h = int(h / 2); continue } m += 9 * c * L[i] * h * h; c = L[i] }
        printf "%.0f", m }'
}
rate=$(sed -n "s/^ours extract 150 ($env_kernel): \([0-9.]*\) img\/s/\1/p" "$work/keras.txt" | sort -g | tail -1)
[ -n "$rate" ] && awk -v r="$rate" -v m="$(macs 150)" -v s="$sgemm" 'BEGIN { g = r * 2 * m / 1e9;
    printf "  extract at 150x150 (best round): %.1f GFLOPS in direct-convolution FLOPs = %.0f%% of sgemm (Winograd does fewer; includes decoding, caching)\n", g, 100 * g / s }'

# --- extract on the GPU -----------------------------------------------------------
if [ "${BENCH_EXTRACT:-1}" != 0 ] && ! build/extract --version | grep -q "GPU: none" &&
    build/extract --device cuda --summary >/dev/null 2>&1; then
    out=$(build/extract --data "$data" --cache "$work/cache_cuda" --weights random --input-size 150 \
          --device cuda --threads "$threads" --batch 16 --quiet --overwrite)
    rate=$(echo "$out" | sed -n 's/.*(\([0-9.]*\) img\/s).*/\1/p')
    bpi=$(echo "$out" | sed -n 's/.*MB on disk, \([0-9]*\) bytes per image.*/\1/p')
    echo "extract --device cuda, $what: $rate img/s, $bpi bytes per image (f16 + zstd; raw 16384)"
fi

# --- finetune -------------------------------------------------------------------
if [ "${BENCH_FINETUNE:-1}" != 0 ]; then
# A head on block5_pool features, then one epoch of fine-tuning block5 with
# it: from images with the seeds' augmentation, and from a block4_pool cache.
ft=$work/ft
# The loader threads alone: the most images/s decoding (and augmenting)
# could feed a faster conv base (a GPU).
build/bench_loader "$data" 150 "$threads" 3
build/extract --data "$data" --cache "$ft/c5" --weights random --input-size 150 --threads "$threads" --quiet >/dev/null
build/extract --data "$data" --cache "$ft/c4" --weights random --input-size 150 --threads "$threads" --quiet \
    --layer block4_pool >/dev/null
build/train --cache "$ft/c5" --out "$ft/head.h5" --epochs 1 --quiet --threads "$threads" >/dev/null
# Two epochs each, the later one timed (the first warms caches and pools),
# as bench_keras.py times Keras's fit of the same model and augmentation.
for mode in images cache; do
    if [ $mode = images ]; then src="--data $data"; else src="--cache $ft/c4"; fi
    out=$(build/finetune $src --head "$ft/head.h5" --weights random --out "$ft/m_$mode.h5" --epochs 2 --batch 20 \
          --lr 1e-4 --momentum 0.9 --threads "$threads" --quiet --checkpoint-seconds 0)
    secs=$(cut -d, -f6 "$ft/m_$mode.history.csv" | tail -n +3 | head -1)
    awk -v n="$n_img" -v t="$secs" -v m="$mode" 'BEGIN { printf "finetune --device cpu from %s at 150x150, block5 + head trainable%s: %.2f img/s (%d images, second epoch %.1f s)\n", m, m == "images" ? ", seeds'"'"' augmentation" : " (block4_pool cache)", n / t, n, t }'
    echo "$out" | grep '^Time:' | sed 's/^/  /'
    if [ $mode = images ] && [ "${BENCH_KERAS:-1}" != 0 ] && [ -x "$kvenv/bin/python" ]; then
        # ImageDataGenerator's transforms need scipy, which older venvs lack.
        "$kvenv/bin/python" -c 'import scipy' 2>/dev/null || "$kvenv/bin/pip" install -q scipy >/dev/null 2>&1 || true
        k=$("$kvenv/bin/python" scripts/bench_keras.py finetune 150 "$data" 2 2>/dev/null |
            sed -n 's/^keras finetune 150: .* \([0-9.]*\) img\/s$/\1/p')
        if [ -n "$k" ]; then
            awk -v n="$n_img" -v t="$secs" -v k="$k" 'BEGIN { printf "  Keras fit, the same model, augmentation and batch (second epoch): %.2f img/s; ours %.2fx Keras\n", k, n / t / k }'
        else
            echo "  (Keras's fine-tuning did not run: scripts/bench_keras.py finetune needs tensorflow-cpu and scipy)"
        fi
    fi
done

fi

# --- train --------------------------------------------------------------------
link_tool bench_train_cache
link_tool bench_dense
"$work/bench_train_cache" "$work/train_cache" 3000
# SGD (the target's case) and RMSprop (the seeds' optimizer, with one state
# slot per weight to read and write as well). The load on these machines
# drifts from minute to minute: the sgemm rates are measured again right
# after each run and the best kept, so a slow spell cannot flatter the ratio.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
for opt in sgd rmsprop; do
    build/train --cache "$work/train_cache" --out "$work/head.h5" --epochs 8 --batch 20 --optimizer $opt \
        --threads "$threads" --quiet >/dev/null
    # The history CSV has each epoch's seconds to the millisecond; the best
    # of 8.
    secs=$(cut -d, -f6 "$work/head.history.csv" | tail -n +2 | sort -g | head -1)
    sgemm=$(best "$sgemm" "$(OPENBLAS_CORETYPE=$kernel "$work/bench_conv" "$threads" --sgemm | awk '{print $3}')")
    [ -n "$sgemm512" ] && sgemm512=$(best "$sgemm512" "$(OPENBLAS_CORETYPE=SkylakeX "$work/bench_conv" "$threads" --sgemm | awk '{print $3}')")
    awk -v t="$secs" -v s="$sgemm" -v s512="$sgemm512" -v o="$opt" -v simd="$simd" 'BEGIN { f = 4 * 3000 * 8192 * 256 / 1e9;
        printf "train, 3000 x 4x4x512, batch 20, %s: %.3f s per epoch (best of 8); dense layers (%s) %.1f GFLOPS = %.0f%% of sgemm %.1f (target >= 70%%)", o, t, simd, f / t, 100 * f / t / s, s
        if (s512 != "") printf ", %.0f%% of the AVX-512 sgemm %.1f", 100 * f / t / s512, s512
        printf "\n" }'
done
# The fused step of the 8192 x 256 layer alone, on each SIMD level the CPU has.
"$work/bench_dense" "$threads"
