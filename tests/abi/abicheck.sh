#!/usr/bin/env bash
# abicheck.sh - compare libdistill.so's ABI with the baseline lib/libdistill.abi.
#
#   tests/abi/abicheck.sh [--update] [BUILD_DIR]
#
# Builds the shared library alone with debug information (RelWithDebInfo) in
# BUILD_DIR (default build-abi), describes its ABI with abidw (public types
# only: those defined under include/), and
#   - without --update: runs abidiff against lib/libdistill.abi.  Exit 0 when
#     the ABI is unchanged or only grew (new functions), 1 when anything in
#     the baseline was removed or changed (a function's signature, a public
#     struct's layout, an enum's values), 2 on an error.  Without a baseline
#     it says so and exits 0.
#   - with --update: writes the description to lib/libdistill.abi, the new
#     baseline (commit it with the change that justifies it).
set -euo pipefail

update=0
if [ "${1:-}" = "--update" ]; then
    update=1
    shift
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-abi}
baseline=$root/lib/libdistill.abi

if [ "$update" = 0 ] && [ ! -f "$baseline" ]; then
    echo "abicheck: no baseline lib/libdistill.abi yet; nothing to compare" \
         "(create it with tests/abi/abicheck.sh --update)"
    exit 0
fi

cmake -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="-fdebug-prefix-map=$root=." \
    -DDISTILL_BUILD_TESTS=OFF -DDISTILL_BUILD_EXAMPLES=OFF -DDISTILL_BUILD_CLI=OFF
cmake --build "$build" --target distill -j "${JOBS:-2}"

lib=$(readlink -f "$build/libdistill.so")
current=$build/libdistill.abi
abidw --headers-dir "$root/include" --drop-private-types \
      --no-corpus-path --no-comp-dir-path --no-show-locs --no-elf-needed \
      --type-id-style hash \
      --out-file "$current" "$lib"

if [ "$update" = 1 ]; then
    cp "$current" "$baseline"
    echo "abicheck: wrote $baseline from $(basename "$lib")"
    exit 0
fi

# abidiff's exit status is a bit field: 1 error, 2 usage error, 4 ABI
# change, 8 incompatible change.  Type layout changes only raise 4, so any
# change to what the baseline already has fails; additions (new functions)
# are allowed, and reported by the second, informational run.
set +e
abidiff --no-added-syms "$baseline" "$current"
rc=$?
set -e
if [ $((rc & 3)) -ne 0 ]; then
    echo "abicheck: abidiff failed (status $rc)" >&2
    exit 2
fi
if [ $((rc & 12)) -ne 0 ]; then
    echo "abicheck: the ABI of lib/libdistill.abi CHANGED (see above): keep the old" \
         "interfaces, or bump DISTILL_VERSION_MAJOR (new SONAME, new version node in" \
         "lib/libdistill.vers) and run tests/abi/abicheck.sh --update." >&2
    exit 1
fi
set +e
added=$(abidiff "$baseline" "$current")
rc=$?
set -e
if [ $((rc & 4)) -ne 0 ]; then
    echo "$added"
    echo "abicheck: compatible additions only; refresh the baseline with --update."
else
    echo "abicheck: ABI identical to lib/libdistill.abi"
fi
