#!/bin/sh
# run.sh - build and run downstream programs against the *installed* library.
#
#   tests/consumer/run.sh BUILD_DIR TMP_DIR
#
# Installs BUILD_DIR into TMP_DIR/prefix, then builds consumer.c and
# consumer.cpp four ways each and runs them:
#   1. by hand with `pkg-config --cflags --libs distill` (shared) and
#      `pkg-config --static --cflags --libs distill` (static);
#   2. with the CMake project beside this script (find_package(distill)),
#      linking distill::distill and distill::distill_static.
# Honours CC, CXX, CFLAGS, CXXFLAGS, LDFLAGS and CMAKE.  Exits nonzero on the
# first failure.
set -eu

build=${1:?usage: run.sh BUILD_DIR TMP_DIR}
tmp=${2:?usage: run.sh BUILD_DIR TMP_DIR}
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$build" && pwd)
CC=${CC:-cc}
CXX=${CXX:-c++}
CMAKE=${CMAKE:-cmake}
CFLAGS=${CFLAGS:-}
CXXFLAGS=${CXXFLAGS:-}
LDFLAGS=${LDFLAGS:-}

step() { printf '\n== consumer: %s\n' "$*"; }

rm -rf "$tmp"
mkdir -p "$tmp"
tmp=$(cd "$tmp" && pwd)
prefix=$tmp/prefix

step "install $build into $prefix"
"$CMAKE" --install "$build" --prefix "$prefix" > "$tmp/install.log"

pc=$(find "$prefix" -name distill.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || { echo "distill.pc was not installed" >&2; exit 1; }
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir distill)
[ -f "$libdir/libdistill.a" ] || { echo "libdir=$libdir from distill.pc has no libdistill.a" >&2; exit 1; }
echo "distill.pc: $pc"
echo "  --cflags --libs:          $(pkg-config --cflags --libs distill)"
echo "  --static --cflags --libs: $(pkg-config --static --cflags --libs distill)"

# Runs a program and checks whether it needs libdistill.so.
run() { # run BINARY shared|static
    if readelf -d "$1" | grep -q 'NEEDED.*libdistill\.so'; then linked=shared; else linked=static; fi
    if [ "$linked" != "$2" ]; then
        echo "$1: expected $2 linking of libdistill, got $linked" >&2
        exit 1
    fi
    LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$1"
}

# `-ldistill` would pick libdistill.so when both are installed: a static
# build names the archive, with the rest of `pkg-config --static` as is.
static_libs=$(pkg-config --static --libs distill | sed "s|-ldistill\\b|$libdir/libdistill.a|")

step "C, pkg-config, shared"
# shellcheck disable=SC2046,SC2086
"$CC" -std=c99 -Wall -Wextra -Werror $CFLAGS $(pkg-config --cflags distill) \
    "$here/consumer.c" -o "$tmp/c_pkgconfig_shared" $LDFLAGS $(pkg-config --libs distill) -lm
run "$tmp/c_pkgconfig_shared" shared

step "C, pkg-config --static"
# shellcheck disable=SC2046,SC2086
"$CC" -std=c99 -Wall -Wextra -Werror $CFLAGS $(pkg-config --static --cflags distill) \
    "$here/consumer.c" -o "$tmp/c_pkgconfig_static" $LDFLAGS $static_libs
run "$tmp/c_pkgconfig_static" static

step "C++, pkg-config, shared"
# shellcheck disable=SC2046,SC2086
"$CXX" -std=c++11 -Wall -Wextra -Werror $CXXFLAGS $(pkg-config --cflags distill) \
    "$here/consumer.cpp" -o "$tmp/cxx_pkgconfig_shared" $LDFLAGS $(pkg-config --libs distill)
run "$tmp/cxx_pkgconfig_shared" shared

step "C++, pkg-config --static"
# shellcheck disable=SC2046,SC2086
"$CXX" -std=c++11 -Wall -Wextra -Werror $CXXFLAGS $(pkg-config --static --cflags distill) \
    "$here/consumer.cpp" -o "$tmp/cxx_pkgconfig_static" $LDFLAGS $static_libs
run "$tmp/cxx_pkgconfig_static" static

step "CMake find_package(distill): configure and build"
CC=$CC CXX=$CXX "$CMAKE" -S "$here" -B "$tmp/cmake-build" \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release > "$tmp/cmake-configure.log" 2>&1 ||
    { cat "$tmp/cmake-configure.log" >&2; exit 1; }
"$CMAKE" --build "$tmp/cmake-build" -j 2

for kind in shared static; do
    for lang in c cxx; do
        step "CMake, $lang, distill::$( [ $kind = shared ] && echo distill || echo distill_static )"
        run "$tmp/cmake-build/consumer_${lang}_${kind}" "$kind"
    done
done

step "all consumer programs ran"
