#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, skipping those
# already present. Needs root (apt-get) only when something is missing.
# Safe to run again.
#   scripts/install_deps.sh          build + test dependencies
#   scripts/install_deps.sh --python also the Python packages that regenerate
#                                    the test fixtures (Keras, Pillow, h5py)
#   scripts/install_deps.sh --demo   what scripts/demo.sh needs: the build's
#                                    packages (not the tests'), Debian's
#                                    Fashion-MNIST and python3-venv (for its
#                                    weights fallback, as root only); with
#                                    --prebuilt not the build's, with --own-data
#                                    not Fashion-MNIST
# Without dpkg-query (not Debian) it lists the Debian names and goes on: the
# packages are then yours to provide.
set -euo pipefail

build_pkgs=(build-essential pkg-config
      liblmdb-dev lmdb-utils libzstd-dev libopenblas-dev libturbojpeg0-dev libjpeg62-turbo-dev
      libpng-dev libhdf5-dev libcurl4-openssl-dev libssl-dev)
test_pkgs=(libcriterion-dev valgrind
      librsvg2-bin)  # rsvg-convert: the plot tests render the SVGs to PNG and look at them

demo=0 python=0 prebuilt=0 own_data=0
for a in "$@"; do
    case $a in
        --demo) demo=1 ;;
        --prebuilt) prebuilt=1 ;;
        --own-data) own_data=1 ;;
        --python) python=1 ;;
        *) echo "usage: scripts/install_deps.sh [--python] [--demo [--prebuilt] [--own-data]]" >&2; exit 2 ;;
    esac
done
if [ $demo = 0 ] && [ $((prebuilt + own_data)) -gt 0 ]; then
    echo "usage: --prebuilt and --own-data go with --demo" >&2
    exit 2
fi
pkgs=()
if [ $demo = 1 ]; then
    [ $prebuilt = 1 ] || pkgs+=("${build_pkgs[@]}")
    [ $own_data = 1 ] || pkgs+=(dataset-fashion-mnist)
    # Only the weights' last-but-one fallback needs it: not root, go on
    # without (the demo then says which weights it could have).
    if [ "$(id -u)" -eq 0 ]; then pkgs+=(python3-venv); fi
else
    pkgs+=("${build_pkgs[@]}" "${test_pkgs[@]}")
fi
if ! command -v dpkg-query >/dev/null; then
    echo "note: no dpkg-query (not a Debian system): not checking packages; Debian calls what is needed: ${pkgs[*]}" >&2
    pkgs=()
fi

missing=()
for p in ${pkgs[@]+"${pkgs[@]}"}; do
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
