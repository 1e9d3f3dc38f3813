#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, after
# scripts/device_build.sh made build/device.tar.xz here and it was carried:
#   1. the GPU tests (GPU vs CPU, in process and through extract; the
#      trainable walk's step vs the CPU step), printing measured errors;
#   2. benchmarks in one run on the same images: extract on the GPU (fp32,
#      tf32) at 150 and 224 vs PyTorch (scripts/bench_torch.py: torchvision
#      VGG16, bf16 autocast, DataLoader workers), extract on the CPU, and
#      fine-tuning on the GPU vs PyTorch;
#   3. the whole test suite with the GPU present, and compute-sanitizer.
# Everything goes to stdout; the figures also to $OUT/summary.txt (device
# tool) or build/device_summary.txt.
#
#   run(command="bash scripts/device_run.sh", carry=["build/device.tar.xz", "build/real"], timeout_s=590)
# (build/real: scripts/real_photos.sh, optional: real photos and ImageNet
# weights for the GPU-vs-CPU check and an end-to-end run on them)
# (about 4 to 8 minutes on an H200; the sections in order of value, the
# whole suite last)
# Sections can be skipped: DEVICE_SKIP="suite sanitizer torch autotune nsys".
set -uo pipefail
T0=$(date +%s)
mkdir -p /tmp/vggft && tar -xJf build/device.tar.xz -C /tmp/vggft && rm -f /tmp/vggft/ft_rates
dev=/tmp/vggft/device
summary=${OUT:-build}/summary.txt
[ -n "${OUT:-}" ] || summary=build/device_summary.txt
: >"$summary"
say() {  # a line for the summary; a section's heading ("== ...") also saves the logs so far
    [[ "$*" == "== "* ]] && keep_logs
    echo "$*"
    echo "$*" >>"$summary"
}
skip() { [[ " ${DEVICE_SKIP:-} " == *" $1 "* ]]; }
elapsed() { echo "$(($(date +%s) - T0)) s"; }
# The full logs beside the summary, after every section: a call stopped at
# its limit still brings back what was done (at most 8 files come back).
keep_logs() {
    [ -n "${OUT:-}" ] || return 0
    for f in t_gpu.log t_gpu_walk.log t_gpu_walk_graph.log t_real.log suite.log nsys.log; do
        [ -f /tmp/vggft/$f ] && cp /tmp/vggft/$f "$OUT/" 2>/dev/null
    done
    [ -f /tmp/vggft/real/ft.log ] && cp /tmp/vggft/real/ft.log "$OUT/real_ft.log" 2>/dev/null
    return 0
}
# cuDNN from the Python packages the machine has: the tools dlopen
# libcudnn.so.9 (kernels/cudnn_api.cu); the CUDA runtime is linked in.
py_lib() { python3 -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null; }
export LD_LIBRARY_PATH="$dev/lib:$(py_lib nvidia.cudnn):$(py_lib nvidia.cuda_runtime):$(py_lib nvidia.cu13 || true):${LD_LIBRARY_PATH:-}"
export VGGFT_BIN=$dev/bin
say "== $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
"$dev/bin/extract" --version | grep -E "cuDNN|GPU|driver|BLAS|vector" | while read -r l; do say "   $l"; done

say "== GPU tests ($(elapsed))"
for suite in gpu gpu_walk; do
    # Together well inside a call's 590 s, so that a hanging test leaves
    # time for the rest (they took 45 s together on the last run).
    timeout $([ $suite = gpu ] && echo 100 || echo 200) "$dev/bin/all" --filter "$suite/*" --short-filename -j4 \
        >/tmp/vggft/t_$suite.log 2>&1
    grep -E "GPU vs CPU|GPU step|\[FAIL\]|Assertion|Synthesis" /tmp/vggft/t_$suite.log | head -60 | while read -r l; do say "   $l"; done
done
# The walk's tests again with every whole-batch step a CUDA graph's launch
# where a test takes more than one (VGGFT_GPU_GRAPH=1, opt-in until this
# run; the graph_* tests set it themselves).
VGGFT_GPU_GRAPH=1 timeout 150 "$dev/bin/all" --filter "gpu_walk/*" --short-filename -j4 >/tmp/vggft/t_gpu_walk_graph.log 2>&1
grep -E "\[FAIL\]|Assertion|Synthesis|warning: GPU|note: GPU" /tmp/vggft/t_gpu_walk_graph.log | head -30 |
    while read -r l; do say "   VGGFT_GPU_GRAPH=1: $l"; done

if [ -d build/real ]; then
    # Carried when scripts/real_photos.sh made it: ImageNet VGG16 (10-bit
    # mantissas) and flowers5 photos.
    say "== real photos, ImageNet weights ($(elapsed))"
    r=/tmp/vggft/real
    mkdir -p $r && xz -dc build/real/weights.h5.xz >$r/weights.h5 && ln -sfn "$PWD/build/real/photos" $r/photos
    VGGFT_REAL_DIR=$r timeout 150 "$dev/bin/all" --filter 'gpu/real_photos*' --short-filename >/tmp/vggft/t_real.log 2>&1
    grep -E "GPU vs CPU|\[FAIL\]|Assertion|Synthesis" /tmp/vggft/t_real.log | while read -r l; do say "   $l"; done
    # The pipeline end to end on the GPU: the frozen base's features, the
    # head on them, block5 fine-tuned with the seeds' augmentation, predict.
    w="--weights $r/weights.h5"
    timeout 60 "$dev/bin/extract" --data build/real/train --cache $r/ct $w --device cuda --quiet >$r/log 2>&1 &&
        timeout 60 "$dev/bin/extract" --data build/real/val --cache $r/cv $w --device cuda --quiet >>$r/log 2>&1 &&
        timeout 120 "$dev/bin/train" --cache $r/ct --val-cache $r/cv --out $r/head.h5 --epochs 20 --quiet >$r/train.log 2>&1 &&
        timeout 120 "$dev/bin/finetune" --data build/real/train --val-data build/real/val --head $r/head.h5 $w \
            --device cuda --precision bf16 --epochs 4 --out $r/ft.h5 --quiet >$r/ft.log 2>&1 &&
        timeout 60 "$dev/bin/predict" --model $r/ft.h5 --eval build/real/val --device cuda --quiet >$r/p.log 2>&1 ||
        say "   real pipeline FAILED: $(tail -3 $r/log $r/train.log $r/ft.log $r/p.log 2>/dev/null)"
    grep -E " Epoch [0-9]+/" $r/train.log | tail -1 | while read -r l; do say "   train (head, 500 flowers5 photos, 20 epochs): $l"; done
    grep -E " Epoch [0-9]+/|^Time|^GPU walk|^Before fine-tuning|^Validation accuracy" $r/ft.log |
        while read -r l; do say "   finetune cuda bf16: $l"; done
    grep -E -i "accuracy" $r/p.log | head -2 | while read -r l; do say "   predict cuda (100 val photos): $l"; done
fi

say "== images ($(elapsed))"
# Photo-like JPEGs (smooth fields plus grain, 400x300, quality 90): 2 classes
# x 1024 (the benchmark set) and a 128-image subset for the CPU.
python3 - <<'PY'
import numpy as np, os
from multiprocessing import Pool
from PIL import Image
def make(i):
    rng = np.random.default_rng(i)
    c = "cats" if i % 2 else "dogs"
    small = Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((400, 300), Image.BICUBIC)
    a = np.asarray(small, dtype=np.float32) + rng.normal(0, 6, (300, 400, 3))
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    for root, limit in (("/tmp/vggft/img", 2048), ("/tmp/vggft/img_small", 128)):
        if i < limit:
            os.makedirs(f"{root}/{c}", exist_ok=True)
            im.save(f"{root}/{c}/{i:05d}.jpg", quality=90)
    # The extract benchmark's set: these files four times over (hard links:
    # the same decode work, 8192 images), so that a run lasts seconds, not a
    # few tenths of one in which start and end dominate.
    os.makedirs(f"/tmp/vggft/img_big/{c}", exist_ok=True)
    for k in range(4):
        os.link(f"/tmp/vggft/img/{c}/{i:05d}.jpg", f"/tmp/vggft/img_big/{c}/r{k}_{i:05d}.jpg")
with Pool(16) as p:
    p.map(make, range(2048))
PY
say "   $(find /tmp/vggft/img -name '*.jpg' | wc -l) images, $(du -sh /tmp/vggft/img | cut -f1)"
say "   $(find /tmp/vggft/img_big -name '*.jpg' | wc -l) images for extract (hard links)"

ours() {  # label, extract args... (W=FILE: those weights instead of random ones)
    local label=$1; shift
    rm -rf /tmp/vggft/c
    if timeout 120 "$dev/bin/extract" --cache /tmp/vggft/c --weights "${W:-random}" "$@" >/tmp/vggft/x.log 2>&1; then
        say "   ours $label: $(grep -E '^Extracted' /tmp/vggft/x.log | cut -d';' -f1) | $(grep -E '^Time:' /tmp/vggft/x.log)"
        say "      $(grep -o 'extract: .*thread.*' /tmp/vggft/x.log | head -1)"
    else
        say "   ours $label: FAILED: $(tail -3 /tmp/vggft/x.log)"
    fi
}
say "== extract benchmark, JPEG files -> cache ($(elapsed))"
for size in 150 224; do
    ours "cuda fp32 $size" --data /tmp/vggft/img_big --input-size $size --device cuda --batch 64
    ours "cuda tf32 $size" --data /tmp/vggft/img_big --input-size $size --device cuda --batch 64 --precision tf32
    ours "cuda bf16 $size" --data /tmp/vggft/img_big --input-size $size --device cuda --batch 64 --precision bf16
    # Real weights give sparse features (ReLU zeros), which compress faster
    # than random weights' noise: the case users run.
    [ -f /tmp/vggft/real/weights.h5 ] && W=/tmp/vggft/real/weights.h5 ours "cuda bf16 $size, ImageNet weights" \
        --data /tmp/vggft/img_big --input-size $size --device cuda --batch 64 --precision bf16
    if ! skip torch; then
        timeout 150 python3 scripts/bench_torch.py extract --data /tmp/vggft/img_big --size $size --batch 64 --workers 16 \
            >/tmp/vggft/t.log 2>&1 || say "   torch extract $size FAILED: $(tail -5 /tmp/vggft/t.log)"
        grep -E "^torch|^json" /tmp/vggft/t.log | while read -r l; do say "   $l"; done
    fi
done
say "== conv base alone, ours (bench_gpu: batch 64, host copies included) ($(elapsed))"
for size in 150 224; do
    for p in fp32 tf32 bf16; do
        r=$(timeout 60 "$dev/bin/bench_gpu" $size 64 40 $p 2>&1 | tail -1)
        say "   $r"
    done
    # Algorithms ranked by timing them (cudnnFind...Algorithm) instead of by
    # cuDNN's heuristics: opt-in until this shows it faster.
    if ! skip autotune; then
        r=$(VGGFT_GPU_AUTOTUNE=1 timeout 40 "$dev/bin/bench_gpu" $size 64 40 bf16 2>&1 | tail -1)
        say "   VGGFT_GPU_AUTOTUNE=1: $r"
    fi
done
ours "cpu 150 (128 images)" --data /tmp/vggft/img_small --input-size 150 --device cpu --batch 32
# The loader threads alone on this node's cores (bench_loader): the ceiling
# of end-to-end images/s for extract (RGB8 items) and fine-tuning (floats
# with the seeds' augmentation), to compare with the runs' figures.
say "== the image loader alone ($(elapsed))"
for t in 15 16; do
    timeout 60 "$dev/bin/bench_loader" /tmp/vggft/img 150 $t 3 2>&1 | while read -r l; do say "   $l"; done
done

say "== fine-tuning benchmark ($(elapsed))"
rm -rf /tmp/vggft/c && "$dev/bin/extract" --data /tmp/vggft/img_small --cache /tmp/vggft/c --weights random --quiet \
    --input-size 150 --device cuda >/dev/null 2>&1
"$dev/bin/train" --cache /tmp/vggft/c --out /tmp/vggft/head.h5 --epochs 1 --quiet >/dev/null 2>&1 || say "   train FAILED"
# Three epochs each (seconds on the H200: fp32 about 5, the others 2; the
# timeouts bound what a hang could take from the sections after); the
# figure to compare with PyTorch's (timed after its
# warm-up steps) is the later epochs' (history.csv's seconds): the first
# one also starts the loader threads and cuDNN. Each precision with the
# head on the GPU (the default); BF16 also with it on the CPU; FP32 and BF16
# also with each step a CUDA graph's launch (VGGFT_GPU_GRAPH=1, opt-in until
# this run shows it faster and passing); BF16 also without the next batch's
# frozen layers beside the step (VGGFT_GPU_OVERLAP=0, the code before
# 2026-12-01's overlap), with and without graphs; BF16 also with the
# algorithms ranked by timing (VGGFT_GPU_AUTOTUNE=1), with and without graphs.
for v in "fp32:" "tf32:" "bf16:" "bf16:VGGFT_GPU_HEAD=0" "bf16:VGGFT_GPU_GRAPH=1" "fp32:VGGFT_GPU_GRAPH=1" \
    "bf16:VGGFT_GPU_OVERLAP=0" "bf16:VGGFT_GPU_GRAPH=1 VGGFT_GPU_OVERLAP=0" "bf16:VGGFT_GPU_AUTOTUNE=1" \
    "bf16:VGGFT_GPU_AUTOTUNE=1 VGGFT_GPU_GRAPH=1"; do
    p=${v%%:*} envs=${v#*:}
    [[ "$envs" == *AUTOTUNE* ]] && skip autotune && continue
    rm -f /tmp/vggft/ft.h5 /tmp/vggft/ft.ckpt /tmp/vggft/ft.history.csv
    timeout 60 env $envs "$dev/bin/finetune" --data /tmp/vggft/img --head /tmp/vggft/head.h5 --weights random \
        --device cuda --precision $p --out /tmp/vggft/ft.h5 --epochs 3 --batch 20 --quiet >/tmp/vggft/f.log 2>&1 ||
        say "   ours finetune cuda $p $envs FAILED: $(tail -5 /tmp/vggft/f.log)"
    grep -E "^Time|^GPU walk|warning|note: GPU" /tmp/vggft/f.log | head -4 | while read -r l; do say "   ours finetune $p $envs: $l"; done
    [ -f /tmp/vggft/ft.history.csv ] && awk -F, -v n=2048 -v what="ours finetune $p $envs" '
        NR == 2 { first = $NF } NR > 2 { later += $NF; k++ }
        END { if (k) printf "   %s: epoch 1 %.2f s (%.0f img/s), epochs 2-%d %.0f img/s\n", what, first, n / first, k + 1, n * k / later }' \
        /tmp/vggft/ft.history.csv | while read -r l; do say "   $l"; done
    # For the ratios to PyTorch below (issue 12's goal: 1.5x at batch 20).
    [ -f /tmp/vggft/ft.history.csv ] && awk -F, -v n=2048 -v what="$p $envs" 'NR > 2 { later += $NF; k++ }
        END { if (k && later > 0) printf "%s\t%.0f\n", what, n * k / later }' /tmp/vggft/ft.history.csv >>/tmp/vggft/ft_rates
done
# predict on the GPU with the fine-tuned model (the same GPU code as extract).
timeout 60 "$dev/bin/predict" --model /tmp/vggft/ft.h5 --eval /tmp/vggft/img_small --device cuda --quiet \
    >/tmp/vggft/p.log 2>&1 || say "   ours predict cuda FAILED: $(tail -5 /tmp/vggft/p.log)"
grep -E -i "accuracy|images" /tmp/vggft/p.log | head -2 | while read -r l; do say "   ours predict cuda: $l"; done
if ! skip torch; then
    timeout 150 python3 scripts/bench_torch.py finetune --data /tmp/vggft/img --size 150 --batch 20 --workers 16 \
        --steps 60 >/tmp/vggft/t.log 2>&1 || say "   torch finetune FAILED: $(tail -5 /tmp/vggft/t.log)"
    grep -E "^torch|^json" /tmp/vggft/t.log | while read -r l; do say "   $l"; done
    # Each configuration's later epochs against PyTorch's rate: the figure
    # that decides the defaults (docs/DEVELOPMENT.md, "what the next one decides").
    torch_ips=$(sed -n 's/^torch finetune [^:]*: \([0-9.]*\) img\/s.*/\1/p' /tmp/vggft/t.log | head -1)
    [ -n "$torch_ips" ] && [ -f /tmp/vggft/ft_rates ] && while IFS=$'\t' read -r what ips; do
        say "   ratio to PyTorch's $torch_ips img/s, ours finetune $what: $(awk -v a="$ips" -v b="$torch_ips" 'BEGIN { if (b > 0) printf "%.2fx (%s img/s)", a / b, a }')"
    done </tmp/vggft/ft_rates
fi
# Where a step's time goes: bf16 at batch 64 (if images/s grows far beyond
# batch 20's, each step's fixed cost dominates: launches, cuDNN's host
# work, copies), and, where Nsight Systems is installed, a profile of a
# short run (CUDA API calls and GPU kernels by total time) in nsys.log.
for envs in "" "VGGFT_GPU_GRAPH=1"; do
    rm -f /tmp/vggft/ft.h5 /tmp/vggft/ft.ckpt /tmp/vggft/ft.history.csv
    timeout 60 env $envs "$dev/bin/finetune" --data /tmp/vggft/img --head /tmp/vggft/head.h5 --weights random \
        --device cuda --precision bf16 --out /tmp/vggft/ft.h5 --epochs 3 --batch 64 --quiet >/tmp/vggft/f64.log 2>&1 ||
        say "   ours finetune bf16 batch 64 $envs FAILED: $(tail -5 /tmp/vggft/f64.log)"
    grep -E "^Time|warning|note: GPU" /tmp/vggft/f64.log | while read -r l; do say "   ours finetune bf16 batch 64 $envs: $l"; done
    [ -f /tmp/vggft/ft.history.csv ] && awk -F, -v n=2048 -v what="ours finetune bf16 batch 64 $envs" 'NR > 2 { later += $NF; k++ }
        END { if (k) printf "   %s: epochs 2-%d %.0f img/s\n", what, k + 1, n * k / later }' \
        /tmp/vggft/ft.history.csv | while read -r l; do say "$l"; done
done
# Where a step's time goes without Nsight: VGGFT_GPU_PROFILE=1 times each
# step's parts on the GPU with events, and the host's time to queue it;
# with VGGFT_GPU_GRAPH=1, the graph's time against the host's (one launch);
# with VGGFT_GPU_OVERLAP=0, the frozen layers in the step's own line.
for envs in "" "VGGFT_GPU_GRAPH=1" "VGGFT_GPU_OVERLAP=0"; do
    rm -f /tmp/vggft/ft.h5 /tmp/vggft/ft.ckpt /tmp/vggft/ft.history.csv
    timeout 60 env VGGFT_GPU_PROFILE=1 $envs "$dev/bin/finetune" --data /tmp/vggft/img --head /tmp/vggft/head.h5 \
        --weights random --device cuda --precision bf16 --out /tmp/vggft/ft.h5 --epochs 2 --batch 20 --quiet \
        >/tmp/vggft/fprof.log 2>&1 || say "   ours finetune bf16 profile $envs FAILED: $(tail -5 /tmp/vggft/fprof.log)"
    grep -E "^GPU step profile|warning|note: GPU" /tmp/vggft/fprof.log | while read -r l; do say "   ours finetune bf16 batch 20 $envs: $l"; done
done
if command -v nsys >/dev/null && ! skip nsys; then
    rm -f /tmp/vggft/ft.h5 /tmp/vggft/ft.ckpt /tmp/vggft/ft.history.csv /tmp/vggft/prof.*
    timeout 120 nsys profile -o /tmp/vggft/prof -t cuda --stats=false "$dev/bin/finetune" --data /tmp/vggft/img \
        --head /tmp/vggft/head.h5 --weights random --device cuda --precision bf16 --out /tmp/vggft/ft.h5 --epochs 2 \
        --batch 20 --quiet >/tmp/vggft/nsys_run.log 2>&1 &&
        timeout 90 nsys stats -r cuda_api_sum,cuda_gpu_kern_sum,cuda_gpu_mem_time_sum /tmp/vggft/prof.nsys-rep \
            >/tmp/vggft/nsys.log 2>&1 || say "   nsys FAILED: $(tail -3 /tmp/vggft/nsys_run.log /tmp/vggft/nsys.log)"
    say "   nsys (finetune bf16, batch 20, 2 epochs): the 12 largest CUDA API and kernel totals:"
    awk '/cuda_api_sum/ {a = 1; k = 0} /cuda_gpu_kern_sum/ {a = 2; k = 0} /cuda_gpu_mem/ {a = 0}
         a && /^ *[0-9.]+ +[0-9]/ && k++ < 12 { printf "      %s\n", substr($0, 1, 200) }' /tmp/vggft/nsys.log |
        while read -r l; do say "      $l"; done
else
    say "   (no nsys on this machine)"
fi

if ! skip sanitizer && command -v compute-sanitizer >/dev/null; then
    say "== compute-sanitizer memcheck ($(elapsed))"
    for t in 'gpu/per_image_bits_do_not_depend_on_the_batch' 'gpu_walk/step_sgd_images_block5' \
        'gpu_walk/graph_steps_equal_steps_queued_one_by_one'; do
        timeout 60 compute-sanitizer --tool memcheck "$dev/bin/all" --filter "$t" -j1 >/tmp/vggft/san.log 2>&1
        grep -E "ERROR SUMMARY|Synthesis|Invalid|out of bounds" /tmp/vggft/san.log | head -8 | while read -r l; do say "   $t: $l"; done
    done
fi
if ! skip suite; then
    say "== the whole test suite with the GPU present ($(elapsed))"
    timeout 120 "$dev/bin/all" --short-filename -j16 >/tmp/vggft/suite.log 2>&1
    grep -E "^\[FAIL\]|Synthesis" /tmp/vggft/suite.log | while read -r l; do say "   $l"; done
    grep -B2 -A6 "Assertion Failed" /tmp/vggft/suite.log | head -80
fi
say "== done ($(elapsed))"
# The full logs beside the summary (the device tool brings back up to 8 files).
keep_logs
