#!/usr/bin/env bash
# vs_torch.sh - run distill-bench cases and the PyTorch peer alternately and
# print them side by side.  Run by hand on a quiet machine, never in CI.
#
#   tests/bench/vs_torch.sh [CASE...]
#
# CASE defaults to the RGB cases: kd_step_rgb64 student_train_step_rgb64
# teacher_infer_rgb64 student_latency_bs1_rgb64, and loader_jpeg64 when
# JPEG_DIR is set.  Each round runs ours, then the peer, for every case.
#
# env: PEER      the peer script (torch_kd.py of the benchmark definitions;
#                required)
#      BENCH     distill-bench (default build/distill-bench)
#      PYTHON    the peer's interpreter (default /usr/bin/python3, which has
#                Debian's python3-torch and python3-torchvision)
#      ROUNDS    rounds (default 3); THREADS (2); STEPS (20 for ours);
#      PEER_STEPS (10: PyTorch's training steps are slow); JPEG_DIR
#      PEAK_GFLOPS  the machine's peak, to print efficiency (optional)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH:-$root/build/distill-bench}
python=${PYTHON:-/usr/bin/python3}
rounds=${ROUNDS:-3}
export THREADS=${THREADS:-2}
steps=${STEPS:-20}
peer_steps=${PEER_STEPS:-10}
: "${PEER:?set PEER to the peer script (torch_kd.py)}"
[ -x "$bench" ] || { echo "vs_torch.sh: no $bench (build with -DDISTILL_BUILD_TESTS=ON)" >&2; exit 2; }

cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
    cases=(kd_step_rgb64 student_train_step_rgb64 teacher_infer_rgb64 student_latency_bs1_rgb64)
    [ -n "${JPEG_DIR:-}" ] && cases+=(loader_jpeg64)
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
    for c in "${cases[@]}"; do
        echo "round $r/$rounds: $c" >&2
        STEPS=$steps "$bench" "$c" 2>/dev/null | grep '^{' >>"$out/ours" || true
        STEPS=$peer_steps "$python" "$PEER" "$c" 2>/dev/null | grep '^{' >>"$out/peer" || true
    done
done

"$python" - "$out/ours" "$out/peer" "${PEAK_GFLOPS:-0}" "${cases[@]}" <<'EOF'
import json, sys
ours, peer, peak, cases = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
def read(p):
    d = {}
    for line in open(p):
        j = json.loads(line)
        d.setdefault(j["case"], []).append(j)
    return d
a, b = read(ours), read(peer)
print(f"| case | unit | libdistill | PyTorch | ratio | libdistill GFLOP/s |")
print("| --- | --- | --- | --- | --- | --- |")
for c in cases:
    xa, xb = a.get(c, []), b.get(c, [])
    if not xa or not xb:
        print(f"| {c} | | {'missing' if not xa else ''} | {'missing' if not xb else ''} | | |")
        continue
    unit = xa[0]["unit"]
    va, vb = sorted(j["value"] for j in xa), sorted(j["value"] for j in xb)
    ma, mb = va[len(va) // 2], vb[len(vb) // 2]
    ratio = mb / ma if unit == "us" else ma / mb      # > 1: we are ahead
    g = [j["gflops"] for j in xa if "gflops" in j]
    gs = ""
    if g:
        gm = sorted(g)[len(g) // 2]
        gs = f"{gm:.1f}" + (f" ({100 * gm / peak:.0f}% of peak)" if peak > 0 else "")
    rng = lambda v: f"{v[0]:,.1f}–{v[-1]:,.1f}" if len(v) > 1 else f"{v[0]:,.1f}"
    print(f"| {c} | {unit} | {rng(va)} | {rng(vb)} | {ratio:.2f}× | {gs} |")
EOF
