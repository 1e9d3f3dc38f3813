#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, after
# scripts/device_build.sh made build/device.tar.xz here and it was carried:
# the GPU tests (GPU vs CPU), then the extract benchmark on both devices.
# Files for the caller go to $OUT (device tool) when set.
set -uo pipefail
mkdir -p /tmp/vggft && tar -xJf build/device.tar.xz -C /tmp/vggft
dev=/tmp/vggft/device
# cuDNN from the Python packages the machine has: the tools dlopen
# libcudnn.so.9 (kernels/cudnn_api.cu); the CUDA runtime is linked in.
py_lib() { python3 -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null; }
export LD_LIBRARY_PATH="$dev/lib:$(py_lib nvidia.cudnn):$(py_lib nvidia.cuda_runtime):$(py_lib nvidia.cu13 || true):${LD_LIBRARY_PATH:-}"
export VGGFT_BIN=$dev/bin
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$dev/bin/extract" --version
echo "== GPU tests"
timeout 120 "$dev/bin/all" --filter 'gpu/*' --short-filename -j1 --verbose || echo "GPU tests FAILED"
echo "== extract benchmark (generated images, random weights, 150x150)"
python3 - <<'PY'
import numpy as np, os
from PIL import Image
rng = np.random.default_rng(0)
for c in ("a", "b"):
    os.makedirs(f"/tmp/vggft/img/{c}", exist_ok=True)
    for i in range(256):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(f"/tmp/vggft/img/{c}/{i:04d}.jpg", quality=90)
PY
for d in cuda cpu; do
    rm -rf /tmp/vggft/cache_$d  # a fresh extraction each time (--overwrite keeps a same-settings cache)
    "$dev/bin/extract" --data /tmp/vggft/img --cache /tmp/vggft/cache_$d --weights random --input-size 150 \
        --device $d --batch 64 --quiet --overwrite | grep -E "Extracted|Cache" || echo "extract --device $d FAILED"
done
echo "== extract at 224x224 on the GPU"
rm -rf /tmp/vggft/cache_224
timeout 120 "$dev/bin/extract" --data /tmp/vggft/img --cache /tmp/vggft/cache_224 --weights random --input-size 224 \
    --device cuda --batch 64 --quiet | grep -E "Extracted|Cache" || echo "extract 224 FAILED"
echo "== the whole test suite with a GPU present"
timeout 240 "$dev/bin/all" --short-filename -j8 2>&1 | tail -30 || echo "test suite FAILED"
if command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck on the GPU tests"
    timeout 120 compute-sanitizer --tool memcheck "$dev/bin/all" --filter 'gpu/base_matches_cpu_48' -j1 2>&1 | tail -20
fi
[ -n "${OUT:-}" ] && cp -r /tmp/vggft/cache_cuda "$OUT/" 2>/dev/null || true
