#!/usr/bin/env bash
# Builds here (CUDA on) what a GPU machine lent through the `device` tool
# needs, and packs it into build/device.tar.xz (small enough to carry):
# the executables and the test binary, with our Debian libraries linked
# statically (STATIC=1) and every shared library still needed beside them,
# except glibc's. The CUDA runtime is linked in; the driver and cuDNN are
# loaded at run time from the GPU machine's own (scripts/device_run.sh
# points LD_LIBRARY_PATH at its cuDNN); `extract --version` there says what
# was found.
#
#   scripts/device_build.sh
#   then, with the device tool: run(command="bash scripts/device_run.sh",
#                                   carry=["build/device.tar.xz"])
# Build in the checkout that the device tool sends (not a copy elsewhere):
# the test binary has the fixtures' path (tests/fixtures) compiled in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
make -j"$(nproc)" CUDA=1 STATIC=1 BUILD=build/gpu all build/gpu/tests/all
rm -rf build/device && mkdir -p build/device/lib build/device/bin
for t in extract train finetune predict bench_gpu bench_loader fashion_mnist; do
    if [ -x build/gpu/$t ]; then cp build/gpu/$t build/device/bin/; fi
done
cp build/gpu/tests/all build/device/bin/
for b in build/device/bin/*; do
    ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|libcudnn*) ;;
        *) cp -L "$lib" build/device/lib/ ;;
    esac
done
strip --strip-debug build/device/bin/*
# xz -9's 64 MiB window spans a whole tool, so the next one (the same
# OpenBLAS, HDF5, CUDA runtime inside) costs little: 16 MB instead of 34.
tar -cf - -C build device | xz -9 -T1 >build/device.tar.xz
ls -la build/device.tar.xz
