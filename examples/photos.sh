#!/usr/bin/env bash
# Distillation on a folder of colour photos: build libdistill, the `distill`
# program and example_fashion_photos, then
#   1. render Fashion-MNIST as coloured JPEGs of mixed sizes (one sub-folder
#      per class; training images for training, test images for validation),
#   2. train torchvision's ResNet-18 (the zoo's resnet18) on them as the teacher,
#   3. distill torchvision's MobileNetV2 (mobilenet_v2) from it with Hinton KD
#      (T=4, alpha=0.9),
#   4. print the compression report: teacher and student side by side.
# Images are read at LOAD_SIZE x LOAD_SIZE; training batches take torchvision's
# RandomResizedCrop to SIZE x SIZE plus a horizontal flip, validation the
# centred SIZE x SIZE window; both are normalized with ImageNet's mean and std.
#
# usage: examples/photos.sh [OUT_DIR]
# env:   PER_CLASS (500 training images per class), VAL_PER_CLASS (100),
#        SIZE (64), LOAD_SIZE (72), EPOCHS_TEACHER (10), EPOCHS_STUDENT (10),
#        BATCH (64), LR (0.01: the peak learning rate of both runs; at the
#        program's default 0.1 the ResNet-18 teacher does not learn this set), SEED (0),
#        THREADS (all cores), WORKERS (1),
#        BUILD_DIR (build-main: not the tests' build/)
# Needs the packages of tests/deps.sh (run it once as root), which include
# dataset-fashion-mnist and libjpeg62-turbo-dev.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/photos-run"}
build=${BUILD_DIR:-"$root/build-main"}
threads=${THREADS:-$(nproc)}
workers=${WORKERS:-1}
per_class=${PER_CLASS:-500}
val_per_class=${VAL_PER_CLASS:-100}
size=${SIZE:-64}
load=${LOAD_SIZE:-72}
epochs_t=${EPOCHS_TEACHER:-10}
epochs_s=${EPOCHS_STUDENT:-10}
batch=${BATCH:-64}
lr=${LR:-0.01}
seed=${SEED:-0}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
   [ -z "${FASHION_MNIST_DIR:-}" ]; then
    echo "Fashion-MNIST is missing: run 'sudo tests/deps.sh' (it installs dataset-fashion-mnist)" >&2
    exit 1
fi

echo "== building libdistill, the distill program and example_fashion_photos ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDISTILL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target distill_cli example_fashion_photos >/dev/null
distill=$(find "$build" -maxdepth 3 -type f -name distill -perm -u+x | head -n 1)
photos=$(find "$build" -maxdepth 3 -type f -name example_fashion_photos -perm -u+x | head -n 1)
mkdir -p "$out"

echo "== 1. photos: $per_class per class for training, $val_per_class per class for validation"
rm -rf "$out/train" "$out/val"
"$photos" "$out/train" --per-class "$per_class" --seed "$seed"
"$photos" "$out/val" --per-class "$val_per_class" --test --seed "$((seed + 1))"

# the same data options for every command
data=(--data "$out/train" --val "$out/val" --size "${load}x${load}"
      --random-resized-crop "${size}x${size}" --center-crop "${size}x${size}"
      --mean imagenet --workers "$workers")

echo "== 2. teacher: resnet18, $epochs_t epoch(s)"
"$distill" train --model resnet18 "${data[@]}" --batch "$batch" --lr "$lr" --epochs "$epochs_t" \
    --seed "$seed" --threads "$threads" --out "$out/teacher.dstl"

echo "== 3. student: mobilenet_v2 distilled from the teacher, $epochs_s epoch(s)"
"$distill" distill --teacher "$out/teacher.dstl" --student mobilenet_v2 \
    --loss kd:T=4,alpha=0.9 "${data[@]}" --batch "$batch" --lr "$lr" --epochs "$epochs_s" \
    --seed "$seed" --threads "$threads" --out "$out/student.dstl"

echo "== 4. report"
"$distill" report --teacher "$out/teacher.dstl" --student "$out/student.dstl" \
    --data "$out/val" --size "${load}x${load}" --center-crop "${size}x${size}" \
    --mean imagenet --threads "$threads"
