#!/usr/bin/env bash
# deps.sh - install the Debian 12 packages needed to build and test libdistill.
# Needs root:  sudo tests/deps.sh
set -euo pipefail

packages=(
    cmake make gcc g++ pkg-config binutils
    libdnnl-dev
    ocl-icd-opencl-dev opencl-c-headers  # oneDNN's CMake package requires OpenCL's
    libpng-dev zlib1g-dev
    libjpeg62-turbo-dev                  # JPEG folders (libjpeg API) and examples/fashion_photos.c
    libcmocka-dev
    dataset-fashion-mnist                # /usr/share/datasets/fashion-mnist/*.gz
    abigail-tools                        # abidw, abidiff: tests/abi/abicheck.sh
    clang libclang-rt-14-dev libomp-dev  # the libFuzzer build of tests/fuzz
    valgrind                             # tests/valgrind.sh (.ci/run, section 7)
    libprotobuf-c-dev protobuf-c-compiler # ONNX import/export (DISTILL_ONNX)
    python3-onnx                         # onnx.proto for the build; onnx.checker in tests
    libonnx-testdata                     # ONNX backend node tests (tests/onnx)
    chromium                             # renders the report page (tests/cli/report_html_test.sh)
)

if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: needs root (run: sudo tests/deps.sh)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update

missing=()
for p in "${packages[@]}"; do
    candidate=$(apt-cache policy "$p" | awk '/Candidate:/ { print $2 }')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps.sh: not available from the configured apt sources: ${missing[*]}" >&2
    exit 1
fi

apt-get install -y --no-install-recommends "${packages[@]}"
