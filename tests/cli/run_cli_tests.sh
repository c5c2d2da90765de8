#!/usr/bin/env bash
# run_cli_tests.sh - end-to-end tests of the `distill` command-line program.
#
#   tests/cli/run_cli_tests.sh DISTILL_BINARY SCRATCH_DIR
#
# Every subcommand's --help, `summary`, the error paths (each must exit
# with the documented status and print exactly one line on stderr, starting
# with "distill: "), `predict` on a PNG written here, a teacher cache of a
# zoo model on IDX files, and, when Debian's Fashion-MNIST is installed
# ($FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist), a tiny
# train -> eval -> distill -> cache -> distill from the cache -> report run
# and a Ctrl-C during training.  Runs at 2 threads.
# Prints "N passed, M failed"; exits nonzero if anything failed.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 DISTILL_BINARY SCRATCH_DIR" >&2
    exit 2
fi
bin=$1
scratch=$2
mkdir -p "$scratch" || exit 2
scratch=$(cd "$scratch" && pwd)
export OMP_NUM_THREADS=2
fmnist=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

pass=0
fail=0
out=$scratch/stdout
err=$scratch/stderr

ok() {
    pass=$((pass + 1))
    echo "ok   $1"
}

not_ok() {
    fail=$((fail + 1))
    echo "FAIL $1: $2"
    sed 's/^/     stderr: /' "$err" | head -5
}

skip() {
    echo "skip $1: $2"
}

# run ARGS... : the program's status in $status, its output in $out and $err
run() {
    "$bin" "$@" >"$out" 2>"$err"
    status=$?
}

# expect_ok NAME STDOUT_PATTERN ARGS...
expect_ok() {
    local name=$1 pattern=$2
    shift 2
    run "$@"
    if [ "$status" -ne 0 ]; then
        not_ok "$name" "exit status $status, expected 0"
    elif ! grep -Eq -- "$pattern" "$out"; then
        not_ok "$name" "stdout does not match /$pattern/"
    else
        ok "$name"
    fi
}

# expect_error NAME STATUS STDERR_PATTERN ARGS...
expect_error() {
    local name=$1 want=$2 pattern=$3
    shift 3
    run "$@"
    local lines
    lines=$(wc -l <"$err")
    if [ "$status" -ne "$want" ]; then
        not_ok "$name" "exit status $status, expected $want"
    elif [ "$lines" -ne 1 ]; then
        not_ok "$name" "$lines lines on stderr, expected 1"
    elif ! grep -q '^distill: ' "$err"; then
        not_ok "$name" "stderr does not start with 'distill: '"
    elif ! grep -Eq -- "$pattern" "$err"; then
        not_ok "$name" "stderr does not match /$pattern/"
    else
        ok "$name"
    fi
}

# ------------------------------------------------------------ test files

# IDX files: N 28x28 images (all zero), labels i % CLASSES.
write_idx() {
    local images=$1 labels=$2 n=$3 classes=$4
    {
        printf '\x00\x00\x08\x03'
        printf "\\x$(printf %02x $((n >> 24 & 255)))\\x$(printf %02x $((n >> 16 & 255)))"
        printf "\\x$(printf %02x $((n >> 8 & 255)))\\x$(printf %02x $((n & 255)))"
        printf '\x00\x00\x00\x1c\x00\x00\x00\x1c'
        head -c $((n * 784)) /dev/zero
    } >"$images"
    {
        printf '\x00\x00\x08\x01'
        printf "\\x$(printf %02x $((n >> 24 & 255)))\\x$(printf %02x $((n >> 16 & 255)))"
        printf "\\x$(printf %02x $((n >> 8 & 255)))\\x$(printf %02x $((n & 255)))"
        local i
        for ((i = 0; i < n; i++)); do
            printf "\\x$(printf %02x $((i % classes)))"
        done
    } >"$labels"
}

# An 80-byte 28x28 8-bit gray PNG: a white rectangle on black.
write_png() {
    printf '\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52'
    printf '\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00\x00\x00\x00\x57\x66\x80'
    printf '\x48\x00\x00\x00\x17\x49\x44\x41\x54\x78\xda\x63\x60\x18\x40\xf0'
    printf '\x1f\x09\x8c\x4a\x8e\x4a\x92\x23\x49\x47\x00\x00\x3c\xc1\xef\x11'
    printf '\xfd\x28\xb1\x38\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82'
}

idx2_img=$scratch/two-images.idx
idx2_lab=$scratch/two-labels.idx
idx10_img=$scratch/ten-images.idx
idx10_lab=$scratch/ten-labels.idx
write_idx "$idx2_img" "$idx2_lab" 8 2
write_idx "$idx10_img" "$idx10_lab" 64 10
png=$scratch/rect.png
write_png >"$png"
folder=$scratch/two-classes
mkdir -p "$folder/a" "$folder/b"
cp "$png" "$folder/a/1.png"
cp "$png" "$folder/b/1.png"
echo "not a png" >"$scratch/fake.png"
echo "not a model" >"$scratch/corrupt.dstl"
idx2="idx:$idx2_img,$idx2_lab"
idx10="idx:$idx10_img,$idx10_lab"

# ------------------------------------------------------------ help

expect_ok "--help lists the subcommands" 'train.*' --help
for c in train distill cache eval report predict summary; do
    if ! grep -q "^  $c " "$out"; then
        not_ok "--help lists $c" "missing"
    fi
done
expect_ok "--version" '^distill [0-9]+\.[0-9]+\.[0-9]+' --version
for c in train distill cache eval report predict summary; do
    expect_ok "$c --help" "^Usage: distill $c " "$c" --help
    if ! grep -q '^Example:' "$out" || ! grep -q -- '--help' "$out"; then
        not_ok "$c --help has options and an example" "missing"
    fi
done

# ------------------------------------------------------------ no data needed

expect_ok "summary --model resnet8" 'fc' summary --model resnet8
expect_ok "summary of torchvision's ResNet-18 at 224x224" \
    ' 11689512 parameters .* 1814073344 mult-adds per image' \
    summary --model resnet18 --classes 1000 --channels 3 --size 224x224
expect_ok "summary of mobilenet_v2 --width 50" ' 700490 parameters .* 7837440 mult-adds' \
    summary --model mobilenet_v2 --classes 10 --channels 3 --size 64x64 --width 50
expect_ok "predict a PNG" "rect\\.png: [0-9]+ \\(0\\.[0-9]{4}\\)" \
    predict --model resnet8 --threads 2 "$png"
jpg=$(cd "$(dirname "$0")/../fuzz/corpus/fuzz_jpeg" && pwd)/rgb_420_17x13.jpg
expect_ok "predict a JPEG" "rgb_420_17x13\\.jpg: [0-9]+ \\(0\\.[0-9]{4}\\)" \
    predict --model resnet8 --threads 2 "$jpg"
expect_ok "predict --top 3" "rect\\.png: [0-9]+ \\([0-9.]+\\), [0-9]+ \\([0-9.]+\\), [0-9]+ " \
    predict --model resnet8 --top 3 "$png"

expect_error "no command" 2 'no command' 
expect_error "unknown command" 2 "unknown command 'frobnicate'" frobnicate
expect_error "unknown option" 2 "unknown option '--bogus'" \
    eval --model resnet8 --data "$idx10" --bogus
expect_error "option of another subcommand" 2 "unknown option '--epochs'" \
    eval --model resnet8 --data "$idx10" --epochs 3
expect_error "unknown main option" 2 "unknown option '--frob'" --frob
expect_error "missing --model" 2 'model is required' train --data "$idx10" --out "$scratch/x.dstl"
expect_error "bad integer" 2 "'zero'" \
    train --model resnet8 --data "$idx10" --epochs zero --out "$scratch/x.dstl"
expect_error "option without value" 2 'needs a value' eval --model resnet8 --data
expect_error "missing model file" 1 'nosuch\.dstl: no such file' \
    eval --model "$scratch/nosuch.dstl" --data "$idx10"
expect_error "corrupt model file" 1 'corrupt\.dstl' \
    eval --model "$scratch/corrupt.dstl" --data "$idx10"
expect_error "unknown zoo model" 1 'no such file or zoo model' summary --model resnet9000
expect_error "resnet18 --width" 1 'resnet18.*width_mult_pct = 50 must be 100' \
    summary --model resnet18 --width 50
expect_error "summary --classes 1" 2 "'1'" summary --model resnet8 --classes 1
expect_error "bad data spec (folder)" 2 'no-such-folder' \
    eval --model resnet8 --data "$scratch/no-such-folder"
expect_error "bad data spec (idx)" 2 'idx:' eval --model resnet8 --data idx:
expect_error "missing IDX file" 1 'no such file' \
    eval --model resnet8 --data "idx:$scratch/none-images,$scratch/none-labels"
expect_error "mismatched classes (IDX, eval)" 1 'model has 10 classes, data has 2' \
    eval --model resnet8 --data "$idx2"
expect_error "mismatched classes (PNG folder, eval)" 1 'model has 10 classes, data has 2' \
    eval --model resnet8 --data "$folder"
# list files: CSV with names (paths relative to the list), "path label" lines
# with numbers; a missing image, and a folder of one class
mkdir -p "$scratch/lists/img" "$scratch/one-class/only"
cp "$png" "$scratch/lists/img/a.png"
cp "$png" "$scratch/lists/img/b.png"
cp "$png" "$scratch/one-class/only/1.png"
printf 'path,label\nimg/a.png,cat\nimg/b.png,dog\n' >"$scratch/lists/train.csv"
printf '# comment\nimg/a.png 0\nimg/b.png 1\n' >"$scratch/lists/train.txt"
printf 'img/a.png,cat\nimg/gone.png,dog\n' >"$scratch/lists/missing.csv"
expect_error "list file, CSV with names (eval)" 1 'model has 10 classes, data has 2' \
    eval --model resnet8 --data "$scratch/lists/train.csv"
expect_error "list file, list: with numbers (eval)" 1 'model has 10 classes, data has 2' \
    eval --model resnet8 --data "list:$scratch/lists/train.txt"
expect_error "list file naming a missing image" 1 'missing\.csv.* line 2.*gone\.png' \
    eval --model resnet8 --data "$scratch/lists/missing.csv"
expect_error "a missing list file" 1 'none\.csv' \
    eval --model resnet8 --data "$scratch/lists/none.csv"
expect_error "train on a folder of one class" 1 "1 class \\('only'\\); training needs at least 2" \
    train --model resnet8 --data "$scratch/one-class" --channels 1 --out "$scratch/x.dstl"
expect_error "mismatched classes (teacher, distill)" 1 'teacher has 10 classes, data has 2' \
    distill --teacher resnet8 --student resnet8 --data "$idx2" --out "$scratch/x.dstl"
expect_error "unknown tap" 1 "nope" \
    distill --teacher resnet20 --student resnet8 --data "$idx10" --batch 16 --threads 2 \
    --loss fitnets:student=nope,teacher=layer3 --out "$scratch/x.dstl" --quiet
expect_error "unknown loss" 2 'bogus' \
    distill --teacher resnet20 --student resnet8 --data "$idx10" --loss bogus:T=1 \
    --out "$scratch/x.dstl"
expect_error "labelled loss with --unlabelled" 2 'needs labels' \
    distill --teacher resnet20 --student resnet8 --data "$idx10" --unlabelled \
    --loss kd:T=4,alpha=0.5 --out "$scratch/x.dstl"
expect_error "--teacher and --teacher-cache together" 2 'cannot be used together' \
    distill --teacher resnet8 --teacher-cache "$scratch/any.cache" --student resnet8 \
    --data "$idx10" --out "$scratch/x.dstl"
expect_error "neither --teacher nor --teacher-cache" 2 '--teacher or --teacher-cache is required' \
    distill --student resnet8 --data "$idx10" --out "$scratch/x.dstl"
expect_error "feature loss with --teacher-cache" 2 'logits only' \
    distill --teacher-cache "$scratch/any.cache" --student resnet8 --data "$idx10" \
    --loss at:student=layer3,teacher=layer3 --out "$scratch/x.dstl"
expect_error "corrupt teacher cache" 1 'teacher-cache .*corrupt\.dstl' \
    distill --teacher-cache "$scratch/corrupt.dstl" --student resnet8 --data "$idx10" \
    --out "$scratch/x.dstl"
expect_ok "cache (zoo teacher, IDX, --no-augment)" 'wrote .*: 32 samples x 1 view x 10 classes' \
    cache --teacher resnet8 --data "$idx10" --limit 32 --no-augment --threads 2 --quiet \
    --out "$scratch/idx.cache"
expect_error "teacher cache of another augmentation" 1 'crop padding 0 and flips off' \
    distill --teacher-cache "$scratch/idx.cache" --student resnet8 --data "$idx10" --limit 32 \
    --batch 16 --epochs 1 --threads 2 --quiet --out "$scratch/x.dstl"
expect_error "--out in a missing folder" 1 'not writable' \
    train --model resnet8 --data "$idx10" --out "$scratch/no/such/dir/x.dstl"
expect_error "predict a missing image" 1 'missing\.png' \
    predict --model resnet8 "$scratch/missing.png"
expect_error "predict a non-PNG" 1 'fake\.png' predict --model resnet8 "$scratch/fake.png"
if [ -e "$scratch/x.dstl" ]; then
    not_ok "failed runs write nothing" "x.dstl exists"
else
    ok "failed runs write nothing"
fi

# ------------------------------------------------ transforms and streaming

# The two-class PNG folder (28x28 gray), streamed (--memory 1K is less than
# its 1568 bytes), through torchvision-style transforms; the teacher's input
# size and channels are read from the teacher.
tx=$scratch/tx.dstl
rm -f "$tx"
expect_ok "train: streamed folder, RandomResizedCrop, Resize + CenterCrop" '"accuracy": [0-9.]+' \
    train --model resnet8 --data "$folder" --channels 1 --random-resized-crop 24 \
    --scale 0.5,1 --ratio 0.8,1.25 --resize 32 --center-crop 24x24 --mean 0.5 --std 0.25 \
    --memory 1K --workers 2 --batch 2 --epochs 1 --threads 2 --quiet --json --out "$tx"
expect_ok "distill: the folder read at the teacher's input size" '"accuracy": [0-9.]+' \
    distill --teacher "$tx" --student resnet8 --data "$folder" --batch 2 --epochs 1 \
    --threads 2 --quiet --json --out "$scratch/tx-student.dstl"
expect_ok "distill: --size, then --center-crop to the teacher's size" '"accuracy": [0-9.]+' \
    distill --teacher "$tx" --student resnet8 --data "$folder" --size 28x28 --center-crop 24 \
    --batch 2 --epochs 1 --threads 2 --quiet --json --out "$scratch/tx-student.dstl"
expect_error "distill: --size conflicting with the teacher" 1 'teacher takes 1x24x24 images.*--size' \
    distill --teacher "$tx" --student resnet8 --data "$folder" --size 28x28 --batch 2 \
    --epochs 1 --threads 2 --quiet --out "$scratch/x.dstl"
expect_error "distill: --channels conflicting with the teacher" 2 'channels 3 conflicts' \
    distill --teacher "$tx" --student resnet8 --data "$folder" --channels 3 --batch 2 \
    --epochs 1 --threads 2 --quiet --out "$scratch/x.dstl"
expect_error "transforms giving another size" 1 'make it 1x20x20' \
    distill --teacher "$tx" --student resnet8 --data "$folder" --center-crop 20 --batch 2 \
    --epochs 1 --threads 2 --quiet --out "$scratch/x.dstl"
expect_ok "eval: Resize + CenterCrop, streamed" '"accuracy": [0-9.]+' \
    eval --model "$tx" --data "$folder" --resize 30 --center-crop 24 --mean 0.5 --std 0.25 \
    --memory 100 --workers 2 --json
expect_error "cache refuses RandomResizedCrop" 2 'cannot be cached' \
    cache --teacher "$tx" --data "$folder" --random-resized-crop 24 --out "$scratch/x.cache"
expect_error "--mean imagenet with --std" 2 'sets the std too' \
    train --model resnet8 --data "$folder" --mean imagenet --std 1 --out "$scratch/x.dstl"
expect_ok "--mean imagenet (RGB folder)" '"accuracy": [0-9.]+' \
    train --model resnet8 --data "$folder" --mean imagenet --size 16x16 --batch 2 --epochs 1 \
    --threads 2 --quiet --json --out "$scratch/rgb.dstl"
expect_error "bad --memory" 2 "'12Q' is not a size in bytes" \
    train --model resnet8 --data "$folder" --memory 12Q --out "$scratch/x.dstl"
expect_error "bad --scale" 2 'MIN <= MAX' \
    train --model resnet8 --data "$folder" --random-resized-crop 8 --scale 0.9,0.1 \
    --out "$scratch/x.dstl"
if [ -e "$scratch/x.dstl" ]; then
    not_ok "failed transform runs write nothing" "x.dstl exists"
else
    ok "failed transform runs write nothing"
fi

# ------------------------------------------------------------ mutual

expect_error "mutual: one student" 2 'at least two --student \(got 1\)' \
    mutual --student resnet8 --data "idx:$idx10_img,$idx10_lab" --out "$scratch/x.dstl"
expect_error "mutual: --out count" 2 '2 --student but 1 --out' \
    mutual --student resnet8 --student cnn --data "idx:$idx10_img,$idx10_lab" --out "$scratch/x.dstl"
expect_error "mutual: --out twice the same" 2 'out .*x\.dstl is given for students 1 and 2' \
    mutual --student resnet8 --student cnn --data "idx:$idx10_img,$idx10_lab" \
    --out "$scratch/x.dstl" --out "$scratch/x.dstl"
expect_error "mutual: --mutual-temperature 0" 2 'mutual-temperature' \
    mutual --student resnet8 --student cnn --data "idx:$idx10_img,$idx10_lab" \
    --mutual-temperature 0 --out "$scratch/x.dstl" --out "$scratch/y.dstl"
expect_error "train: --out twice" 2 'out given twice' \
    train --model resnet8 --data "idx:$idx10_img,$idx10_lab" --out "$scratch/x.dstl" \
    --out "$scratch/y.dstl"
rm -f "$scratch/m2.dstl"
run train --model cnn --data "idx:$idx2_img,$idx2_lab" --batch 4 --epochs 1 --quiet \
    --out "$scratch/m2.dstl"
[ "$status" -eq 0 ] && ok "a two-class model" || not_ok "a two-class model" "status $status"

# ------------------------------------------------------------ self-describing models

# A model trained on the two-class folder (read as RGB, 28x28) with a
# normalization records its data, normalization, class names and provenance;
# predict, eval and report use them, and refuse data that does not fit.
meta=$scratch/meta.dstl
rm -f "$meta" "$scratch/meta2.dstl" "$scratch/meta.onnx" "$scratch/meta-bare.dstl"
expect_ok "meta: train on a folder with --mean/--std" '^wrote ' \
    train --model resnet8 --data "$folder" --mean 0.5 --std 0.25 --batch 2 --epochs 1 \
    --threads 2 --quiet --out "$meta"
expect_ok "meta: summary prints what the model records" '^  classes +a, b$' summary --model "$meta"
for want in '^  data\.shape +3,28,28$' '^  normalize\.mean +0\.5$' '^  normalize\.std +0\.25$' \
    '^  provenance\.library +libdistill [0-9]' '^  provenance\.command +distill train$' \
    '^  provenance\.options +\{"command": "train", "model": "resnet8", .*"mean": \[0\.5\]' \
    '^  provenance\.seed +0$' '^  provenance\.data +fnv1a64:[0-9a-f]{16}$'; do
    grep -Eq -- "$want" "$out" || not_ok "meta: summary has /$want/" "missing"
done
expect_ok "meta: predict prints the class name" 'rect\.png: (a|b) \(0\.[0-9]{4}\), (a|b) ' \
    predict --model "$meta" --top 2 "$png"
# the probability predict prints is that of eval's forward on the normalized
# image: both folder images are the same rectangle, labelled a and b, so
# eval's mean cross-entropy is -(log p_a + log p_b) / 2
pa=$(sed -n 's/.* a (\([0-9.]*\)).*/\1/p' "$out")
pb=$(sed -n 's/.* b (\([0-9.]*\)).*/\1/p' "$out")
run eval --model "$meta" --data "$folder" --json
loss=$(sed -n 's/.*"loss": \([-0-9.e]*\).*/\1/p' "$out")
if [ "$status" -ne 0 ] || [ -z "$pa" ] || [ -z "$pb" ] || [ -z "$loss" ]; then
    not_ok "meta: predict's probability = eval's forward" "no numbers (eval status $status)"
elif awk -v a="$pa" -v b="$pb" -v l="$loss" \
        'BEGIN { d = exp(-l) - sqrt(a * b); exit !(d < 2e-4 && d > -2e-4) }'; then
    ok "meta: predict's probability = eval's forward (p_a $pa, p_b $pb, loss $loss)"
else
    not_ok "meta: predict's probability = eval's forward" "p_a $pa p_b $pb, eval loss $loss"
fi
# ... and that normalization is the model's: --mean 0 --std 1 changes it, the
# recorded values given again do not
run predict --model "$meta" --top 2 --mean 0 --std 1 "$png"
pa0=$(sed -n 's/.* a (\([0-9.]*\)).*/\1/p' "$out")
[ -n "$pa0" ] && [ "$pa0" != "$pa" ] && ok "meta: predict normalizes as the model records" ||
    not_ok "meta: predict normalizes as the model records" "p_a $pa0 without it, $pa with it"
expect_ok "meta: eval with the recorded --mean/--std given" "\"loss\": $loss," \
    eval --model "$meta" --data "$folder" --mean 0.5 --std 0.25 --json
run eval --model "$meta" --data "$folder" --mean 0 --std 1 --json
grep -q "\"loss\": $loss," "$out" && not_ok "meta: eval normalizes as the model records" \
    "the same loss without the normalization" || ok "meta: eval normalizes as the model records"

# data of another channel count, and of other class names: refused naming
# both, unless --allow-mismatch (which repeats a 1-channel image)
expect_error "meta: eval of 1-channel data on a 3-channel model" 1 \
    'model takes 3-channel images \(3x28x28\), data has 1-channel images \(1x28x28\)' \
    eval --model "$meta" --data "$idx2"
expect_ok "meta: eval --allow-mismatch repeats the channel" '"count": 8' \
    eval --model "$meta" --data "$idx2" --allow-mismatch --json
catdog=$scratch/cat-dog
mkdir -p "$catdog/cat" "$catdog/dog"
cp "$png" "$catdog/cat/1.png"
cp "$png" "$catdog/dog/1.png"
expect_error "meta: eval of data with other class names" 1 \
    "model was trained on the classes a, b; data has cat, dog \\(class 0 is 'a' against 'cat'" \
    eval --model "$meta" --data "$catdog"
expect_ok "meta: eval --allow-mismatch matches classes by number" "\"loss\": $loss," \
    eval --model "$meta" --data "$catdog" --allow-mismatch --json
expect_error "meta: predict --data with other class names" 1 'trained on the classes a, b' \
    predict --model "$meta" --data "$catdog" "$png"
expect_error "meta: report on data with other class names" 1 \
    'teacher was trained on the classes a, b; data has cat, dog' \
    report --teacher "$meta" --student resnet8 --data "$catdog"
expect_error "meta: distill on data with other class names" 1 \
    'teacher was trained on the classes a, b; data has cat, dog' \
    distill --teacher "$meta" --student resnet8 --data "$catdog" --batch 2 --epochs 1 \
    --out "$scratch/x.dstl"
# a student distilled on data without names (IDX, repeated over the
# teacher's channels) takes the teacher's names and normalization
expect_ok "meta: distill on IDX data, --allow-mismatch" '^wrote ' \
    distill --teacher "$meta" --student resnet8 --data "$idx2" --allow-mismatch --batch 4 \
    --epochs 1 --threads 2 --quiet --out "$scratch/meta2.dstl"
expect_ok "meta: the student records the teacher's names" '^  classes +a, b$' \
    summary --model "$scratch/meta2.dstl"
grep -Eq '^  normalize\.mean +0\.5$' "$out" && grep -Eq '^  provenance\.command +distill distill$' "$out" &&
    ok "meta: the student records the teacher's normalization" ||
    not_ok "meta: the student records the teacher's normalization" "missing"
# teachers that expect different normalizations
expect_ok "meta: train with another normalization" '^wrote ' \
    train --model resnet8 --data "$folder" --mean 0.4 --std 0.25 --batch 2 --epochs 1 \
    --threads 2 --quiet --out "$scratch/meta3.dstl"
expect_error "meta: teachers that normalize differently" 2 \
    'teacher .*meta\.dstl expects the normalization mean 0\.5 std 0\.25, teacher .*meta3\.dstl expects mean 0\.4' \
    distill --teacher "$meta" --teacher "$scratch/meta3.dstl" --student resnet8 --data "$folder" \
    --batch 2 --epochs 1 --out "$scratch/x.dstl"
# the metadata travels through ONNX, and can be left out
run export --model "$meta" --out "$scratch/meta.onnx"
if [ "$status" -ne 0 ] && grep -q 'without ONNX support' "$err"; then
    skip "meta: the ONNX file records the same metadata" "no ONNX support"
else
    run summary --model "$meta"
    sed -n '/^metadata:/,$p' "$out" >"$scratch/meta-dstl.txt"
    run summary --model "$scratch/meta.onnx"
    sed -n '/^metadata:/,$p' "$out" >"$scratch/meta-onnx.txt"
    [ -s "$scratch/meta-onnx.txt" ] && cmp -s "$scratch/meta-dstl.txt" "$scratch/meta-onnx.txt" &&
        ok "meta: the ONNX file records the same metadata" ||
        not_ok "meta: the ONNX file records the same metadata" "summaries differ"
    expect_ok "meta: predict from the ONNX file" 'rect\.png: (a|b) ' \
        predict --model "$scratch/meta.onnx" "$png"
fi
run export --model "$meta" --no-metadata --out "$scratch/meta-bare.dstl"
run summary --model "$scratch/meta-bare.dstl"
grep -q '^metadata:' "$out" && not_ok "meta: export --no-metadata leaves it out" "still there" ||
    ok "meta: export --no-metadata leaves it out"
expect_ok "meta: a model without metadata predicts class numbers" 'rect\.png: [0-9] ' \
    predict --model "$scratch/meta-bare.dstl" "$png"
if [ -e "$scratch/x.dstl" ]; then
    not_ok "refused metadata runs write nothing" "x.dstl exists"
else
    ok "refused metadata runs write nothing"
fi

# ------------------------------------------------------------ Fashion-MNIST

if [ ! -e "$fmnist/train-images-idx3-ubyte.gz" ] && [ ! -e "$fmnist/train-images-idx3-ubyte" ]; then
    skip "train, eval, distill, report, Ctrl-C" "no Fashion-MNIST in $fmnist"
else
    teacher=$scratch/teacher.dstl
    student=$scratch/student.dstl
    rm -f "$teacher" "$student" "$scratch/int.dstl"
    expect_ok "train (tiny)" '"accuracy": [0-9.]+' \
        train --model resnet20 --data fashion-mnist --limit 512 --val-limit 256 --epochs 1 \
        --batch 64 --threads 2 --json --out "$teacher"
    [ -s "$teacher" ] && ok "train wrote the model" || not_ok "train wrote the model" "missing"
    expect_ok "eval --json" '^\{.*"accuracy": [0-9.]+.*"count": 500\}$' \
        eval --model "$teacher" --data fashion-mnist --limit 500 --threads 2 --json
    expect_ok "eval --confusion" 'confusion matrix' \
        eval --model "$teacher" --data fashion-mnist --limit 200 --threads 2 --confusion
    expect_ok "distill (tiny)" '"output": ' \
        distill --teacher "$teacher" --student resnet8 --loss kd:T=4,alpha=0.9 \
        --loss fitnets:student=layer3,teacher=layer3,weight=0.1 --data fashion-mnist \
        --limit 512 --val-limit 256 --epochs 1 --batch 64 --threads 2 --json --out "$student"
    [ -s "$student" ] && ok "distill wrote the model" || not_ok "distill wrote the model" "missing"
    cache=$scratch/teacher.cache
    rm -f "$cache" "$scratch/student3.dstl" "$scratch/student4.dstl" "$scratch/y.dstl"
    expect_ok "cache (tiny)" '"views": 50, "classes": 10, .*"bytes": [0-9]+' \
        cache --teacher "$teacher" --data fashion-mnist --limit 128 --batch 64 --threads 2 \
        --json --quiet --out "$cache"
    # 128 samples x 50 views x 10 classes of 4 bytes, and a header
    size=$(wc -c <"$cache" 2>/dev/null || echo 0)
    if [ "$size" -ge 256000 ] && [ "$size" -lt 260096 ]; then
        ok "cache file size"
    else
        not_ok "cache file size" "$size bytes"
    fi
    expect_ok "distill --teacher-cache" '"output": ' \
        distill --teacher-cache "$cache" --student resnet8 --data fashion-mnist --limit 128 \
        --val-limit 128 --epochs 1 --batch 64 --threads 2 --json --quiet \
        --out "$scratch/student3.dstl"
    # the defaults of both commands match: the same student as from the teacher itself
    # (their provenance differs: the models are compared without their metadata)
    run distill --teacher "$teacher" --student resnet8 --data fashion-mnist --limit 128 \
        --val-limit 128 --epochs 1 --batch 64 --threads 2 --quiet --out "$scratch/student4.dstl"
    dstatus=$status
    "$bin" export --model "$scratch/student3.dstl" --no-metadata --out "$scratch/student3-bare.dstl" 2>/dev/null
    "$bin" export --model "$scratch/student4.dstl" --no-metadata --out "$scratch/student4-bare.dstl" 2>/dev/null
    if [ ! -s "$scratch/student3.dstl" ]; then
        not_ok "distill from the cache = from the teacher" "no model from the cache"
    elif [ "$dstatus" -ne 0 ]; then
        not_ok "distill from the cache = from the teacher" "distill --teacher: status $dstatus"
    elif ! cmp -s "$scratch/student3-bare.dstl" "$scratch/student4-bare.dstl"; then
        not_ok "distill from the cache = from the teacher" "the two students differ"
    else
        ok "distill from the cache = from the teacher"
    fi
    expect_error "teacher cache of another --limit" 1 'another dataset' \
        distill --teacher-cache "$cache" --student resnet8 --data fashion-mnist --limit 256 \
        --val-limit 128 --epochs 1 --batch 64 --threads 2 --quiet --out "$scratch/y.dstl"
    [ -e "$scratch/y.dstl" ] && not_ok "a refused cache writes nothing" "y.dstl exists" ||
        ok "a refused cache writes nothing"
    expect_ok "distill --unlabelled, ensemble" '"accuracy"' \
        distill --teacher "$teacher" --teacher "$teacher" --student resnet8 --unlabelled \
        --data fashion-mnist --limit 256 --val-limit 128 --epochs 1 --batch 64 --threads 2 \
        --json --quiet --out "$scratch/student2.dstl"
    expect_ok "report --json" '"agreement": [0-9.]+' \
        report --teacher "$teacher" --student "$student" --data fashion-mnist --limit 256 \
        --batch 32 --threads 2 --json
    expect_ok "report table" '^parameters ' \
        report --teacher "$teacher" --student "$student" --data fashion-mnist --limit 256 \
        --batch 32 --threads 2
    expect_ok "predict with class names" 'rect\.png: [A-Za-z]' \
        predict --model "$student" --data fashion-mnist "$png"
    expect_ok "predict: Fashion-MNIST's names, from the model itself" \
        'rect\.png: (T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot) \(' \
        predict --model "$student" "$png"
    expect_error "eval of Fashion-MNIST on a 3-channel model" 1 \
        'model takes 3-channel images \(3x28x28\), data has 1-channel images \(1x28x28\)' \
        eval --model "$meta" --data fashion-mnist --limit 64

    # Runs that survive: the model of a run interrupted by a real SIGINT
    # (at a step boundary, checkpoint written) and resumed, and of a run
    # killed with SIGKILL after a periodic checkpoint and resumed, is byte
    # for byte the model of the uninterrupted run (same seed, 2 threads).
    surv=(train --model resnet8 --data fashion-mnist --limit 256 --val-limit 32 --batch 16
          --epochs 2 --threads 2 --seed 3)
    rm -f "$scratch"/surv-*
    run "${surv[@]}" --quiet --out "$scratch/surv-ref.dstl"
    [ "$status" -eq 0 ] && ok "survive: uninterrupted run" ||
        not_ok "survive: uninterrupted run" "status $status"
    # wait_step FILE N: until stderr FILE shows a progress line at step >= N
    wait_step() {
        local i
        for ((i = 0; i < 600; i++)); do
            if grep -Eo 'step [0-9]+/' "$1" 2>/dev/null | tr -dc '0-9\n' |
                awk -v n="$2" '$1 >= n { f = 1 } END { exit !f }'; then
                return 0
            fi
            sleep 0.05
        done
        return 1
    }
    set -m
    "$bin" "${surv[@]}" --checkpoint "$scratch/surv-int.ckpt" \
        --out "$scratch/surv-int.dstl" >"$out" 2>"$err" &
    pid=$!
    set +m
    # the progress lines come every 50 steps off a terminal: wait for the first epoch
    wait_step "$err" 16
    kill -INT "$pid" 2>/dev/null
    wait "$pid"
    status=$?
    if [ "$status" -ne 130 ]; then
        not_ok "survive: SIGINT writes a checkpoint, exits 130" "status $status"
    elif ! tail -n 1 "$err" | grep -q "^distill: interrupted at step [0-9]*; .*--resume $scratch/surv-int.ckpt"; then
        not_ok "survive: SIGINT writes a checkpoint, exits 130" "no resume message"
    elif [ ! -s "$scratch/surv-int.ckpt" ] || [ -e "$scratch/surv-int.dstl" ]; then
        not_ok "survive: SIGINT writes a checkpoint, exits 130" "checkpoint missing or model written"
    else
        ok "survive: SIGINT writes a checkpoint, exits 130"
    fi
    istep=$(tail -n 1 "$err" | sed -n 's/.*interrupted at step \([0-9]*\).*/\1/p')
    run "${surv[@]}" --quiet --resume "$scratch/surv-int.ckpt" --out "$scratch/surv-int.dstl"
    if [ "$status" -ne 0 ]; then
        not_ok "survive: SIGINT then --resume = uninterrupted" "resume: status $status"
    elif ! cmp -s "$scratch/surv-ref.dstl" "$scratch/surv-int.dstl"; then
        not_ok "survive: SIGINT then --resume = uninterrupted" "the models differ (stopped at step $istep)"
    elif [ -z "$istep" ] || [ "$istep" -ge 32 ] || [ "$istep" -lt 16 ]; then
        not_ok "survive: SIGINT then --resume = uninterrupted" "stopped at step '$istep', not mid-run"
    else
        ok "survive: SIGINT then --resume = uninterrupted (stopped at step $istep)"
    fi
    # SIGKILL: nothing runs at the kill; the last periodic checkpoint counts
    "$bin" "${surv[@]}" --checkpoint "$scratch/surv-kill.ckpt" --checkpoint-every 4 \
        --out "$scratch/surv-kill.dstl" >"$out" 2>"$err" &
    pid=$!
    wait_step "$err" 16
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    status=$?
    run "${surv[@]}" --quiet --checkpoint "$scratch/surv-kill.ckpt" \
        --resume "$scratch/surv-kill.ckpt" --out "$scratch/surv-kill.dstl"
    if [ "$status" -ne 0 ]; then
        not_ok "survive: kill -9, --resume from --checkpoint-every = uninterrupted" "status $status"
    elif ! cmp -s "$scratch/surv-ref.dstl" "$scratch/surv-kill.dstl"; then
        not_ok "survive: kill -9, --resume from --checkpoint-every = uninterrupted" "the models differ"
    else
        ok "survive: kill -9, --resume from --checkpoint-every = uninterrupted"
    fi
    expect_error "survive: --checkpoint-every without --checkpoint" 2 'needs --checkpoint' \
        "${surv[@]}" --checkpoint-every 3 --out "$scratch/x.dstl"
    expect_error "survive: --resume of a missing file" 1 'resume .*nosuch\.ckpt' \
        "${surv[@]}" --resume "$scratch/nosuch.ckpt" --out "$scratch/x.dstl"
    expect_error "survive: --resume of a corrupt file" 1 'resume .*corrupt\.dstl' \
        "${surv[@]}" --quiet --resume "$scratch/corrupt.dstl" --out "$scratch/x.dstl"

    # Mutual learning: two students, each written; a run stopped by SIGINT
    # and resumed writes both byte for byte as the uninterrupted run.
    mut=(mutual --student resnet8 --student resnet8 --data fashion-mnist --limit 128
         --val-limit 32 --batch 16 --epochs 2 --threads 2 --seed 3 --mutual-temperature 2)
    rm -f "$scratch"/mut-*
    expect_ok "mutual: two students" '^wrote .*mut-ref-b\.dstl: resnet8, final loss' \
        "${mut[@]}" --quiet --out "$scratch/mut-ref-a.dstl" --out "$scratch/mut-ref-b.dstl"
    if [ ! -s "$scratch/mut-ref-a.dstl" ] || cmp -s "$scratch/mut-ref-a.dstl" "$scratch/mut-ref-b.dstl"; then
        not_ok "mutual: two different students written" "missing or equal"
    else
        ok "mutual: two different students written"
    fi
    set -m
    "$bin" "${mut[@]}" --checkpoint "$scratch/mut-int.ckpt" --out "$scratch/mut-int-a.dstl" \
        --out "$scratch/mut-int-b.dstl" >"$out" 2>"$err" &
    pid=$!
    set +m
    wait_step "$err" 8
    kill -INT "$pid" 2>/dev/null
    wait "$pid"
    status=$?
    istep=$(tail -n 1 "$err" | sed -n 's/.*interrupted at step \([0-9]*\).*/\1/p')
    if [ "$status" -ne 130 ] || [ ! -s "$scratch/mut-int.ckpt" ] || [ -e "$scratch/mut-int-a.dstl" ]; then
        not_ok "mutual: SIGINT writes a checkpoint, exits 130" "status $status"
    else
        ok "mutual: SIGINT writes a checkpoint, exits 130"
    fi
    run "${mut[@]}" --quiet --resume "$scratch/mut-int.ckpt" --out "$scratch/mut-int-a.dstl" \
        --out "$scratch/mut-int-b.dstl"
    if [ "$status" -ne 0 ]; then
        not_ok "mutual: SIGINT then --resume = uninterrupted" "resume: status $status"
    elif ! cmp -s "$scratch/mut-ref-a.dstl" "$scratch/mut-int-a.dstl" ||
         ! cmp -s "$scratch/mut-ref-b.dstl" "$scratch/mut-int-b.dstl"; then
        not_ok "mutual: SIGINT then --resume = uninterrupted" "the models differ (stopped at step $istep)"
    elif [ -z "$istep" ] || [ "$istep" -ge 16 ] || [ "$istep" -lt 8 ]; then
        not_ok "mutual: SIGINT then --resume = uninterrupted" "stopped at step '$istep', not mid-run"
    else
        ok "mutual: SIGINT then --resume = uninterrupted (stopped at step $istep)"
    fi
    expect_error "mutual: a single-student checkpoint" 1 'written for 1 student, this trainer has 2' \
        "${mut[@]}" --quiet --resume "$scratch/surv-kill.ckpt" --out "$scratch/x.dstl" \
        --out "$scratch/y.dstl"
    expect_error "mutual: students of different classes" 1 \
        "--student .*student\.dstl has 10 classes, --student .*m2\.dstl has 2" \
        mutual --student "$scratch/m2.dstl" --student "$student" --data "idx:$idx10_img,$idx10_lab" \
        --batch 8 --epochs 1 --quiet --out "$scratch/x.dstl" --out "$scratch/y.dstl"

    # Ctrl-C: exit 130, one message, no output file.  Job control makes
    # the background job receive SIGINT rather than ignore it; the signal is
    # sent once training has reported progress (its handler is in place).
    set -m
    "$bin" train --model resnet8 --data fashion-mnist --limit 30000 --batch 8 --epochs 1 \
        --val none --threads 2 --out "$scratch/int.dstl" >"$out" 2>"$err" &
    pid=$!
    set +m
    for ((i = 0; i < 300; i++)); do
        grep -q '^epoch' "$err" && break
        sleep 0.1
    done
    kill -INT "$pid" 2>/dev/null
    wait "$pid"
    status=$?
    if [ "$status" -ne 130 ]; then
        not_ok "Ctrl-C stops training" "exit status $status, expected 130"
    elif ! tail -n 1 "$err" | grep -q '^distill: interrupted'; then
        not_ok "Ctrl-C stops training" "last stderr line is not 'distill: interrupted...'"
    elif [ -e "$scratch/int.dstl" ]; then
        not_ok "Ctrl-C stops training" "the output file was written"
    else
        ok "Ctrl-C stops training"
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
