#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every
# test, then the GPU tests on the GPU emulation (tests/emu/: our GPU code and
# kernels on the host CPU, about 4 minutes; its bit-for-bit tests again with
# FMA contraction, under a minute; all of them again with the streams taking
# turns operation by operation, about 4 minutes), then the same tests under ASan +
# UBSan (the emulated GPU's too: the GPU code's host side, its page-locked
# buffers and queues, about 5 minutes), then the image decoders' tests
# under valgrind, then the Slurm job
# chain on a one-node Slurm cluster it starts (about a minute; installs
# slurm-wlm and munge when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=$(nproc)
make -j"$jobs"
make -j"$jobs" test
make -j"$jobs" test-emu
make -j"$jobs" test-emu-fma
make -j"$jobs" test-emu-interleave
make -j"$jobs" SANITIZE=1 test
make -j"$jobs" SANITIZE=1 test-emu
make -j"$jobs" test-valgrind
make -j"$jobs" test-slurm
