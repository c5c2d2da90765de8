#!/usr/bin/env bash
# The main job: build libdistill and the `distill` program, then on
# Fashion-MNIST (Debian's dataset-fashion-mnist package):
#   1. train a ResNet-20 teacher,
#   2. distill a ResNet-8 student from it with Hinton KD (T=4, alpha=0.9),
#   3. print the compression report: teacher and student side by side.
#
# usage: examples/fashion_mnist.sh [OUT_DIR]
# env:   EPOCHS_TEACHER (2), EPOCHS_STUDENT (2), THREADS (all cores), BUILD_DIR (build-main: not the
#        tests' build/, which tests/run.sh configures with the tests on)
# Needs the packages of tests/deps.sh (run it once as root).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/fashion-mnist-run"}
build=${BUILD_DIR:-"$root/build-main"}
threads=${THREADS:-$(nproc)}
epochs_t=${EPOCHS_TEACHER:-2}
epochs_s=${EPOCHS_STUDENT:-2}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
   [ -z "${FASHION_MNIST_DIR:-}" ]; then
    echo "Fashion-MNIST is missing: run 'sudo tests/deps.sh' (it installs dataset-fashion-mnist)" >&2
    exit 1
fi

echo "== building libdistill and the distill program ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDISTILL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target distill_cli >/dev/null
distill=$(find "$build" -maxdepth 3 -type f -name distill -perm -u+x | head -n 1)
mkdir -p "$out"

echo "== 1. teacher: ResNet-20, $epochs_t epoch(s)"
"$distill" train --model resnet20 --data fashion-mnist --epochs "$epochs_t" \
    --threads "$threads" --out "$out/teacher.dstl"

echo "== 2. student: ResNet-8 distilled from the teacher, $epochs_s epoch(s)"
"$distill" distill --teacher "$out/teacher.dstl" --student resnet8 \
    --loss kd:T=4,alpha=0.9 --data fashion-mnist --epochs "$epochs_s" \
    --threads "$threads" --out "$out/student.dstl"

echo "== 3. compression report"
"$distill" report --teacher "$out/teacher.dstl" --student "$out/student.dstl" \
    --data fashion-mnist --threads "$threads"

echo "== done: $out/teacher.dstl and $out/student.dstl"
