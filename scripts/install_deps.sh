#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, skipping those
# already present. Needs root (apt-get). Safe to run again.
#   scripts/install_deps.sh          build + test dependencies
#   scripts/install_deps.sh --python also the Python packages that regenerate
#                                    the test fixtures (Keras, Pillow, h5py)
#   scripts/install_deps.sh --demo   also what scripts/demo.sh needs: Debian's
#                                    Fashion-MNIST and python3-venv (for its
#                                    weights fallback)
set -euo pipefail

pkgs=(build-essential pkg-config
      liblmdb-dev lmdb-utils libzstd-dev libopenblas-dev libturbojpeg0-dev libjpeg62-turbo-dev
      libpng-dev libhdf5-dev libcurl4-openssl-dev libssl-dev libcriterion-dev valgrind
      librsvg2-bin)  # rsvg-convert: the plot tests render the SVGs to PNG and look at them

demo=0 python=0
for a in "$@"; do
    case $a in
        --demo) demo=1 ;;
        --python) python=1 ;;
        *) echo "usage: scripts/install_deps.sh [--python] [--demo]" >&2; exit 2 ;;
    esac
done
[ $demo = 1 ] && pkgs+=(dataset-fashion-mnist python3-venv)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ $python = 1 ]; then
    python3 -m pip install -q numpy h5py pillow "keras>=3" jax jaxlib
fi
