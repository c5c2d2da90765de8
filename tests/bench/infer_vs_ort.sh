#!/usr/bin/env bash
# infer_vs_ort.sh - inference, libdistill against ONNX Runtime on the same
# exported models, side by side.  Run by hand on a quiet machine; never in CI.
#
#   ORT_INFER=PATH/ort_infer.js NODE_PATH=/tmp/ort/node_modules \
#       tests/bench/infer_vs_ort.sh [BUILD_DIR]
#
# For ResNet-8 and ResNet-20 (1x28x28) and torchvision's ResNet-18 and
# MobileNetV2 (3x64x64, 10 classes), each exported once with
# `distill export`, at batch 1 and BIG_BATCH, on 1 and 2 threads, it runs
# `distill-bench model_infer` and the ONNX Runtime peer (ort_infer.js)
# alternately, ROUNDS times, and prints one table: the median latency at
# batch 1 (µs) and images/s in batches (from the median call, as the peer
# computes it), each as the range over the rounds, the ratio of the medians,
# and GFLOP/s (multiply-adds from `distill summary`, x2) against the
# machine's peak.
#
# Environment:
#   ORT_INFER    the peer script ort_infer.js (required)
#   NODE_PATH    where onnxruntime-node is installed (see ort_infer.js)
#   PEAK_GFLOPS  the peak on 1 and 2 threads as "P1,P2"; else FMA_PEAK_SRC
#                (the path of the shared FMA peak program, tools/fma_peak in the
#                shared folder) is compiled in a temporary folder and run on
#                1 and 2 threads; with neither, no efficiency is printed
#   ROUNDS (3), STEPS (50), BIG_BATCH (128), MODELS ("r8 r20 r18 mnv2"),
#   THREAD_COUNTS ("1 2")
#   DISTILL_PARALLEL_MIN_MACS  passed to libdistill (see the README): 0 runs
#                every primitive on all threads
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
distill=$build/distill
bench=$build/distill-bench
rounds=${ROUNDS:-3}
steps=${STEPS:-50}
big=${BIG_BATCH:-128}
models=${MODELS:-r8 r20 r18 mnv2}
thread_counts=${THREAD_COUNTS:-1 2}

[ -n "${ORT_INFER:-}" ] && [ -f "$ORT_INFER" ] ||
    { echo "infer_vs_ort.sh: set ORT_INFER to the peer's ort_infer.js" >&2; exit 2; }
[ -x "$bench" ] && [ -x "$distill" ] ||
    { echo "infer_vs_ort.sh: no $bench or $distill (build with -DDISTILL_BUILD_TESTS=ON)" >&2; exit 2; }
command -v node >/dev/null || { echo "infer_vs_ort.sh: node is not installed" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- the peak
peak1=""; peak2=""
if [ -n "${PEAK_GFLOPS:-}" ]; then
    peak1=${PEAK_GFLOPS%%,*}; peak2=${PEAK_GFLOPS##*,}
elif [ -n "${FMA_PEAK_SRC:-}" ]; then
    gcc -O2 -mavx512f -mfma -fopenmp "$FMA_PEAK_SRC" -o "$tmp/fma_peak"
    peak1=$(OMP_NUM_THREADS=1 "$tmp/fma_peak" | awk '{print $1}')
    peak2=$(OMP_NUM_THREADS=2 "$tmp/fma_peak" | awk '{print $1}')
fi

# ---- the models: name, zoo name, zoo options, C H W
spec() {
    case $1 in
    r8) echo "resnet8|--channels 1 --size 28x28|1 28 28|ResNet-8 1x28x28" ;;
    r20) echo "resnet20|--channels 1 --size 28x28|1 28 28|ResNet-20 1x28x28" ;;
    r18) echo "resnet18|--channels 3 --size 64x64|3 64 64|ResNet-18 3x64x64" ;;
    mnv2) echo "mobilenet_v2|--channels 3 --size 64x64|3 64 64|MobileNetV2 3x64x64" ;;
    *) echo "infer_vs_ort.sh: unknown model $1" >&2; exit 2 ;;
    esac
}

results=$tmp/results.jsonl
: > "$results"
for m in $models; do
    IFS='|' read -r zoo opts chw label <<< "$(spec "$m")"
    # shellcheck disable=SC2086
    "$distill" export --model "$zoo" $opts --out "$tmp/$m.onnx" >/dev/null
    macs=$("$distill" summary --model "$tmp/$m.onnx" | sed -n 's/.* \([0-9]*\) mult-adds per image.*/\1/p')
    for batch in 1 "$big"; do
        for th in $thread_counts; do
            for r in $(seq "$rounds"); do
                ours=$(MODEL="$tmp/$m.onnx" BATCH=$batch THREADS=$th STEPS=$steps "$bench" model_infer 2>/dev/null)
                # shellcheck disable=SC2086
                peer=$(THREADS=$th STEPS=$steps node "$ORT_INFER" "$tmp/$m.onnx" model_infer "$batch" $chw 2>/dev/null)
                echo "{\"model\": \"$label\", \"macs\": $macs, \"batch\": $batch, \"threads\": $th, \"round\": $r, \"ours\": $ours, \"peer\": $peer}" >> "$results"
                echo "# $label batch $batch threads $th round $r done" >&2
            done
        done
    done
done

# ---- the table
PEAK1=$peak1 PEAK2=$peak2 python3 - "$results" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
peak = {1: os.environ.get("PEAK1"), 2: os.environ.get("PEAK2")}
groups = {}
for r in rows:
    groups.setdefault((r["model"], r["batch"], r["threads"]), []).append(r)
print("| model | batch | threads | libdistill | ONNX Runtime | ours / ORT | libdistill GFLOP/s | ORT GFLOP/s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (model, batch, th), rs in groups.items():
    macs = rs[0]["macs"]
    # per call: µs (batch 1) or images/s, both from the median call
    ours_us = [r["ours"]["median_us"] for r in rs]
    if batch == 1:
        peer_us = [r["peer"]["value"] for r in rs]
    else:
        peer_us = [batch * 1e6 / r["peer"]["value"] for r in rs]
    def fmt(us):
        if batch == 1:
            return "%.0f–%.0f µs" % (min(us), max(us))
        ips = sorted(batch * 1e6 / u for u in us)
        return "%.0f–%.0f img/s" % (ips[0], ips[-1])
    mo, mp = statistics.median(ours_us), statistics.median(peer_us)
    speed = mp / mo  # > 1: we are faster
    ratio = "%.2f× faster" % speed if speed >= 1 else "%.2f× slower" % (1 / speed)
    def gf(us):
        g = 2.0 * macs * batch / (us * 1e-6) / 1e9
        p = peak.get(th)
        return "%.1f (%.0f%%)" % (g, 100 * g / float(p)) if p else "%.1f" % g
    print("| %s | %d | %d | %s | %s | %s | %s | %s |" % (model, batch, th, fmt(ours_us), fmt(peer_us),
          ratio, gf(mo), gf(mp)))
if peak[1] or peak[2]:
    print("\npeak (fma_peak): %s GFLOP/s on 1 thread, %s on 2" % (peak[1] or "?", peak[2] or "?"))
EOF
lscpu | sed -n 's/^Model name: *//p'
