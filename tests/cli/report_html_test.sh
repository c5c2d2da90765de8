#!/usr/bin/env bash
# report_html_test.sh - the training log (--log) and the HTML report (report --html).
#
#   tests/cli/report_html_test.sh DISTILL_BINARY SCRATCH_DIR [SCREENSHOT.png]
#
# - a log of a tiny run: every line is JSON; start, step, epoch and end lines;
# - a run stopped by SIGTERM, and one killed by SIGKILL, keep a log whose
#   every line parses (it is flushed line by line);
# - report --html on an image folder whose class names need escaping: the
#   page is well-formed, self-contained and holds the --json figures of the
#   same run (tests/cli/check_report_html.py);
# - on Fashion-MNIST (skipped without it): a teacher and a student trained
#   with --log, their report page checked the same way and rendered by
#   headless Chromium (skipped without it) into a screenshot that must not be
#   blank, at a wide and at a narrow window.  A third argument keeps the wide
#   screenshot there (the README's picture, docs/report.png).
# Prints "N passed, M failed"; exits nonzero if anything failed.
set -u

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 DISTILL_BINARY SCRATCH_DIR [SCREENSHOT.png]" >&2
    exit 2
fi
bin=$1
scratch=$2
keep_png=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
check="$here/check_report_html.py"
mkdir -p "$scratch" || exit 2
scratch=$(cd "$scratch" && pwd)
export OMP_NUM_THREADS=2
fmnist=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
py=/usr/bin/python3
[ -x "$py" ] || py=python3

pass=0
fail=0
err=$scratch/stderr
ok() { pass=$((pass + 1)); echo "ok   $1"; }
not_ok() {
    fail=$((fail + 1))
    echo "FAIL $1: $2"
    sed 's/^/     stderr: /' "$err" | head -5
}
skip() { echo "skip $1: $2"; }

# check_log NAME FILE WANT_END_STATUS: every line JSON; a start line first,
# step lines, and (unless WANT is "none") an end line with that status last.
check_log() {
    local name=$1 file=$2 want=$3 msg
    if msg=$("$py" - "$file" "$want" <<'EOF'
import json, sys
path, want = sys.argv[1], sys.argv[2]
lines = open(path).read().split("\n")
if lines[-1] != "":
    sys.exit("the last line is not terminated")
rec = [json.loads(l) for l in lines[:-1]]
if not rec or rec[0]["event"] != "start":
    sys.exit("no start line first")
steps = [r for r in rec if r["event"] == "step"]
if len(steps) < 2:
    sys.exit("%d step lines" % len(steps))
for r in steps:
    for k in ("epoch", "step", "loss", "terms", "lr", "images_per_sec"):
        if k not in r:
            sys.exit("a step line without %s" % k)
    if not r["terms"] or any(not isinstance(v, (int, float)) for v in r["terms"].values()):
        sys.exit("a step line without loss terms")
if [r["step"] for r in steps] != sorted(r["step"] for r in steps):
    sys.exit("steps out of order")
if want == "none":
    if rec[-1]["event"] == "end":
        sys.exit("an end line in a killed run's log")
else:
    if rec[-1]["event"] != "end" or rec[-1]["status"] != want:
        sys.exit("last line %r, wanted an end line %s" % (rec[-1], want))
    if want == "ok":
        ep = [r for r in rec if r["event"] == "epoch"]
        if len(ep) != rec[0]["epochs"] or not all("val_accuracy" in r for r in ep):
            sys.exit("%d epoch lines for %d epochs" % (len(ep), rec[0]["epochs"]))
print("%d lines" % len(rec))
EOF
    ); then
        ok "$name ($msg)"
    else
        not_ok "$name" "$msg"
    fi
}

# wait_lines FILE N: until FILE has N lines (10 s at most)
wait_lines() {
    local i
    for ((i = 0; i < 200; i++)); do
        [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

# ------------------------------------------------------------ test data

# IDX files of N 28x28 images with a little texture, labels i % 2
"$py" - "$scratch/imgs.idx" "$scratch/labs.idx" 3000 <<'EOF'
import struct, sys
n = int(sys.argv[3])
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28))
    f.write(bytes(((i * 7 + p) * 13) & 255 for i in range(n) for p in range(784)))
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack(">II", 0x801, n))
    f.write(bytes(i % 2 for i in range(n)))
EOF
idx="idx:$scratch/imgs.idx,$scratch/labs.idx"

# A folder whose class names must be escaped in HTML: <b>&"x' and plain.
write_png() {
    printf '\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52'
    printf '\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00\x00\x00\x00\x57\x66\x80'
    printf '\x48\x00\x00\x00\x17\x49\x44\x41\x54\x78\xda\x63\x60\x18\x40\xf0'
    printf '\x1f\x09\x8c\x4a\x8e\x4a\x92\x23\x49\x47\x00\x00\x3c\xc1\xef\x11'
    printf '\xfd\x28\xb1\x38\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82'
}
folder=$scratch/folder
rm -rf "$folder"
hostile="<b>&\"x'"
mkdir -p "$folder/$hostile" "$folder/plain"
for i in 1 2 3 4; do
    write_png >"$folder/$hostile/$i.png"
    write_png >"$folder/plain/$i.png"
done

# ------------------------------------------------------------ the log

rm -f "$scratch"/*.log "$scratch"/*.html "$scratch"/*.json
"$bin" train --model resnet8 --data "$folder" --size 16x16 --batch 2 --epochs 2 --threads 2 \
    --log "$scratch/folder.log" --log-every 1 --quiet --out "$scratch/folder.dstl" \
    >/dev/null 2>"$err"
status=$?
if [ "$status" -ne 0 ]; then
    not_ok "train --log" "status $status"
else
    check_log "train --log: JSON lines, start, steps, epochs, end" "$scratch/folder.log" ok
fi
"$bin" train --model resnet8 --data "$folder" --log-every 3 --out "$scratch/x.dstl" \
    >/dev/null 2>"$err"
[ $? -eq 2 ] && grep -q 'needs --log' "$err" && ok "--log-every needs --log" ||
    not_ok "--log-every needs --log" "not refused"
"$bin" train --model resnet8 --data "$folder" --log "$scratch/no/such/dir/x.log" \
    --out "$scratch/x.dstl" >/dev/null 2>"$err"
[ $? -eq 1 ] && grep -q -- '--log .*not writable' "$err" && ok "--log in a missing folder" ||
    not_ok "--log in a missing folder" "not refused before training"

# SIGTERM: the run stops at a step boundary; the log ends with "interrupted"
set -m
"$bin" train --model resnet8 --data "$idx" --batch 8 --epochs 1 --val none --threads 2 \
    --log "$scratch/term.log" --log-every 1 --quiet --out "$scratch/term.dstl" \
    >/dev/null 2>"$err" &
pid=$!
set +m
wait_lines "$scratch/term.log" 4
kill -TERM "$pid" 2>/dev/null
wait "$pid"
status=$?
if [ "$status" -ne 130 ]; then
    not_ok "SIGTERM: the log parses line by line" "status $status, expected 130"
else
    check_log "SIGTERM: the log parses line by line" "$scratch/term.log" interrupted
fi
# SIGKILL: nothing runs at the kill; every line written so far is whole
"$bin" train --model resnet8 --data "$idx" --batch 8 --epochs 1 --val none --threads 2 \
    --log "$scratch/kill.log" --log-every 1 --quiet --out "$scratch/kill.dstl" \
    >/dev/null 2>"$err" &
pid=$!
wait_lines "$scratch/kill.log" 4
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
check_log "SIGKILL: the log parses line by line" "$scratch/kill.log" none

# ------------------------------------------------------------ the page

# report_page NAME HTML JSON LOGS ARGS...: report --html and --json of one run, checked
report_page() {
    local name=$1 html=$2 json=$3 logs=$4
    shift 4
    "$bin" report "$@" --threads 2 --html "$html" --json >"$json" 2>"$err"
    local status=$? msg
    if [ "$status" -ne 0 ]; then
        not_ok "$name" "report: status $status"
    elif msg=$("$py" "$check" "$html" "$json" --logs "$logs" 2>&1); then
        ok "$name"
    else
        not_ok "$name" "$msg"
    fi
}

report_page "report --html: well-formed, escaped, the figures of --json" \
    "$scratch/folder.html" "$scratch/folder.json" 1 \
    --teacher "$scratch/folder.dstl" --student "$scratch/folder.dstl" --data "$folder" \
    --batch 2 --log "$scratch/folder.log"
if grep -q '<b>&' "$scratch/folder.html" || ! grep -q '&lt;b&gt;&amp;&quot;x&#39;' \
    "$scratch/folder.html"; then
    not_ok "report --html escapes class names" "the raw name is in the page"
else
    ok "report --html escapes class names"
fi
"$bin" report --teacher "$scratch/folder.dstl" --student "$scratch/folder.dstl" \
    --data "$folder" --log "$scratch/folder.log" >/dev/null 2>"$err"
[ $? -eq 2 ] && grep -q 'give --html' "$err" && ok "report --log needs --html" ||
    not_ok "report --log needs --html" "not refused"
echo "not a log" >"$scratch/bad.log"
"$bin" report --teacher "$scratch/folder.dstl" --student "$scratch/folder.dstl" \
    --data "$folder" --html "$scratch/x.html" --log "$scratch/bad.log" >/dev/null 2>"$err"
[ $? -eq 1 ] && grep -q 'bad.log: no training log lines' "$err" &&
    ok "report --log of a file that is not a log" ||
    not_ok "report --log of a file that is not a log" "not refused"

# shot NAME HTML PNG WIDTH HEIGHT: a headless Chromium screenshot, checked not blank
shot() {
    local name=$1 page=$2 png=$3 w=$4 h=$5 msg
    rm -f "$png"
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --disable-background-networking --no-first-run --user-data-dir="$scratch/chromium" \
        --window-size="$w,$h" --screenshot="$png" "file://$page" >/dev/null 2>"$err"
    if [ ! -s "$png" ]; then
        not_ok "$name" "no screenshot"
    elif msg=$("$py" "$check" --png "$png" 2>&1); then
        ok "$name"
    else
        not_ok "$name" "$msg"
    fi
}

if [ ! -e "$fmnist/train-images-idx3-ubyte.gz" ] && [ ! -e "$fmnist/train-images-idx3-ubyte" ]; then
    skip "report page of a teacher and a student" "no Fashion-MNIST in $fmnist"
else
    common=(--data fashion-mnist --limit 256 --val-limit 128 --epochs 2 --batch 32 --threads 2
            --log-every 2 --quiet)
    "$bin" train --model resnet14 "${common[@]}" --log "$scratch/teacher.log" \
        --out "$scratch/teacher.dstl" >/dev/null 2>"$err" &&
    "$bin" distill --teacher "$scratch/teacher.dstl" --student resnet8 \
        --loss kd:T=4,alpha=0.9 --loss ce:weight=0.1 "${common[@]}" \
        --log "$scratch/student.log" --out "$scratch/student.dstl" >/dev/null 2>"$err"
    status=$?
    if [ "$status" -ne 0 ]; then
        not_ok "train and distill with --log" "status $status"
    else
        check_log "distill --log: JSON lines with every loss term" "$scratch/student.log" ok
        page=$scratch/fmnist.html
        report_page "report --html of a teacher and a student, two logs" "$page" \
            "$scratch/fmnist.json" 2 --teacher "$scratch/teacher.dstl" \
            --student "$scratch/student.dstl" --data fashion-mnist --limit 200 --batch 16 \
            --log "$scratch/teacher.log" --log "$scratch/student.log"
        if ! command -v chromium >/dev/null 2>&1; then
            skip "the page renders (headless Chromium)" "no chromium"
        else
            shot "the page renders (headless Chromium, 1000 px)" "$page" "$scratch/wide.png" \
                1000 1500
            shot "the page renders in a narrow window (420 px)" "$page" "$scratch/narrow.png" \
                420 900
            if [ -n "$keep_png" ] && [ -s "$scratch/wide.png" ]; then
                cp "$scratch/wide.png" "$keep_png"
            fi
        fi
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
