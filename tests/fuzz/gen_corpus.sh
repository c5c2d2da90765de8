#!/bin/sh
# gen_corpus.sh - rebuild the seed corpora in tests/fuzz/corpus/.
#
#   tests/fuzz/gen_corpus.sh [BUILD_DIR [FASHION_MNIST_DIR]]
#
# BUILD_DIR (default: build) is a normal, unsanitized build of libdistill
# holding libdistill.so; FASHION_MNIST_DIR defaults to Debian's
# /usr/share/datasets/fashion-mnist.  The corpus folders are replaced.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
fmnist=${2:-/usr/share/datasets/fashion-mnist}
cc=${CC:-cc}

[ -f "$build/libdistill.so" ] || { echo "no $build/libdistill.so: build libdistill first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2046
"$cc" -std=c11 -O1 -Wall -Wextra -I"$root/include" -o "$tmp/gen_corpus" "$here/gen_corpus.c" \
    -L"$build" -ldistill -Wl,-rpath,"$build" $(pkg-config --cflags --libs libpng libjpeg zlib)
OMP_NUM_THREADS=1 "$tmp/gen_corpus" "$tmp/corpus" "$fmnist"
for d in "$tmp"/corpus/*/; do
    name=$(basename "$d")
    rm -rf "$here/corpus/$name"
    mkdir -p "$here/corpus"
    cp -r "$d" "$here/corpus/$name"
done
du -sb "$here/corpus"
