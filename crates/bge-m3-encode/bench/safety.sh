#!/usr/bin/env bash
# Issue 29's encoder figures, for one or more builds of bge-m3-encode run one after the other
# on the same files (so a build before the fix and one after compare side by side):
#
#  1. kill -9 of a Parquet run once its partial file holds 70% of the output's bytes, then
#     --resume: how many of the 4,000 records the resume encodes again;
#  2. the peak RSS (/usr/bin/time -v) of reading a corpus whose second line is a 300 MB
#     record, skipped as a bad record, next to the same corpus without it.
#
# Usage: crates/bge-m3-encode/bench/safety.sh MODEL_DIR BINARY [BINARY...]
# e.g.   crates/bge-m3-encode/bench/safety.sh fixtures/models/tiny-pt target/debug/bge-m3-encode
set -euo pipefail
model=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
random.seed(29)
words = "vector search hybrid lexical dense the of retrieval passage query index embedding".split()
with open(f"{work}/corpus.jsonl", "w") as f:
    for i in range(4000):
        text = " ".join(random.choice(words) for _ in range(random.randint(5, 60)))
        f.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
small = [json.dumps({"id": "a", "text": "before the long line"}),
         json.dumps({"id": "c", "text": "after the long line"})]
with open(f"{work}/short.jsonl", "w") as f:
    f.write(small[0] + "\n" + small[1] + "\n")
with open(f"{work}/long.jsonl", "w") as f:
    f.write(small[0] + "\n")
    f.write('{"id": "b", "text": "')
    chunk = "a" * (1 << 20)
    for _ in range(300):
        f.write(chunk)
    f.write('"}\n')
    f.write(small[1] + "\n")
PY

for bin in "$@"; do
    echo "== $bin"
    # 1. Records encoded again after a kill at 70%.
    args=(--model "$model" "$work/corpus.jsonl" --window-texts 256 --progress none)
    rm -rf "$work/out"* "$work/clean"*
    "$bin" "${args[@]}" -o "$work/clean.parquet" 2>/dev/null
    target=$(( $(stat -c %s "$work/clean.parquet") * 7 / 10 ))
    "$bin" "${args[@]}" -o "$work/out.parquet" 2>/dev/null &
    pid=$!
    size=0
    while kill -0 "$pid" 2>/dev/null && [ "$size" -lt "$target" ]; do
        size=0
        for partial in "$work"/out.parquet.partial*; do
            case "$partial" in *.groups|*'*') ;; *) size=$(stat -c %s "$partial" 2>/dev/null || echo 0) ;; esac
        done
        sleep 0.02
    done
    kill -9 "$pid" 2>/dev/null || echo "  (the run ended before the kill: rerun)"
    wait "$pid" 2>/dev/null || true
    summary=$("$bin" "${args[@]}" -o "$work/out.parquet" --resume 2>&1 | tail -1)
    echo "  killed at $size of $(stat -c %s "$work/clean.parquet") bytes; the resume: $summary"

    # 2. Peak memory reading a 300 MB line.
    for corpus in short long; do
        rss=$( { /usr/bin/time -v "$bin" --model "$model" "$work/$corpus.jsonl" -o "$work/out-$corpus.jsonl" \
            --on-error skip --progress none 2>&1 >/dev/null; } | awk '/Maximum resident/ {print $6}')
        echo "  $corpus.jsonl ($(stat -c %s "$work/$corpus.jsonl") bytes): peak RSS $((rss / 1024)) MiB"
    done
done
