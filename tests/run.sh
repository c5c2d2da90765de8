#!/usr/bin/env bash
# run.sh - configure, build and test libdistill.
#
#   tests/run.sh [BUILD_DIR [CMAKE_ARGS...]]
#
# BUILD_DIR defaults to build.  The build is Release with warnings as errors;
# CMAKE_ARGS come last and override that, e.g.
#   tests/run.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DDISTILL_SANITIZE=ON
# JOBS (default 2) sets the parallelism of the build and of ctest.  Extra
# ctest arguments go in CTEST_ARGS, e.g. CTEST_ARGS="-L unit".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
shift || true
jobs=${JOBS:-2}

# DISTILL_BUILD_TESTS=ON even when BUILD_DIR was configured without tests
# before; ctest fails when it finds no test, so "passed" means tests ran.
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDISTILL_WERROR=ON \
    -DDISTILL_BUILD_TESTS=ON "$@"
cmake --build "$build" -j "$jobs"
# shellcheck disable=SC2086
(cd "$build" && ctest --output-on-failure --no-tests=error -j "$jobs" ${CTEST_ARGS:-})
