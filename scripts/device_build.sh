#!/usr/bin/env bash
# Builds here (CUDA on) what a GPU machine lent through the `device` tool
# needs, and packs it into build/device.tar.xz (small enough to carry):
# the executables, the test binary, and every shared library they use except
# glibc, CUDA's runtime and cuDNN (the GPU machine has those; see
# scripts/device_run.sh, which points LD_LIBRARY_PATH at them).
#
#   scripts/device_build.sh
#   then, with the device tool: run(command="bash scripts/device_run.sh",
#                                   carry=["build/device.tar.xz"])
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
make -j"$(nproc)" CUDA=1 all build/tests/all
rm -rf build/device && mkdir -p build/device/lib build/device/bin
cp build/extract build/train build/finetune build/tests/all build/device/bin/
for b in build/device/bin/*; do
    ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|libcudnn*) ;;
        *) cp -L "$lib" build/device/lib/ ;;
    esac
done
tar -cJf build/device.tar.xz -C build device
ls -la build/device.tar.xz
