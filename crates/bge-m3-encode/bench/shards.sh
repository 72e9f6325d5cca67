#!/usr/bin/env bash
# Issue 27's scaling figure: tokens/s of one shard process against two shard processes at
# once, each with one thread (--threads 1), on the same corpus, alternately (one, two, one,
# two, ...), so that a change in the machine's load falls on both alike.
#
# For each run it prints the wall time of the whole run (the model's load included: each
# process loads its own copy) and the encoding time each process reports in its summary (from
# the end of its load to its exit); "tokens/s" is the tokens of the whole corpus over the wall
# time, "encode tokens/s" over the slowest process's encoding time; "cpu_s" the CPU time (user
# + system, /usr/bin/time) of the run's processes, and "tokens/cpu_s" the tokens over it: what
# the work costs whatever else runs. "balance" is the larger shard's share of the tokens over
# 1/2: two shards can at best run 2 / balance times as fast as one process. It also checks that
# the two shards wrote the one process's documents and tokens between them, and prints the load
# average before each run: on a shared machine, a ratio is only worth what the load allows.
#
# Each process runs in a session of its own (setsid), as the shards of separate machines or pods
# would: Linux's autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled) otherwise gives
# the processes of one session one share of a busy machine between them, so that two shards
# could not get more CPU than one process. SESSIONS=shared runs them all in this script's
# session instead.
#
# Usage: crates/bge-m3-encode/bench/shards.sh MODEL_DIR BINARY [RUNS] [DOCS]
# e.g.   crates/bge-m3-encode/bench/shards.sh /tmp/bge-m3-full target/release/bge-m3-encode 3 64
# (MODEL_DIR: the full-size random model, `fixtures/.venv/bin/python fixtures/generate.py`.)
set -euo pipefail
model=$1
bin=$2
runs=${3:-3}
docs=${4:-64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Passages of 10 to 60 words (these words take about 3.4 tokens each with BGE-M3's
# tokenizer), seeded, in an order with no pattern in their lengths.
python3 - "$work/corpus.jsonl" "$docs" <<'PY'
import json, random, sys
random.seed(27)
words = ("vector search hybrid lexical dense the of retrieval passage query index embedding "
         "multilingual Qdrant BM25 sparse colbert shard manifest corpus").split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        text = " ".join(random.choice(words) for _ in range(random.randint(10, 60)))
        f.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
PY

common=(--model "$model" --threads 1 --progress none --window-texts 16 "$work/corpus.jsonl")

# "done: D documents, T tokens in S s (...)" -> "D T S"
parse() {
    sed -n 's/^done: \([0-9,]*\) documents, \([0-9,]*\) tokens in \([0-9.]*\) s .*/\1 \2 \3/p' "$1" | tr -d ,
}

now() { date +%s.%N; }
load() { cut -d' ' -f1 /proc/loadavg; }

# /usr/bin/time's user + system seconds of a run, from its -o file.
cpu() { awk '{ print $1 + $2 }' "$1"; }
if [ "${SESSIONS:-own}" = shared ]; then
    timed() { /usr/bin/time -f '%U %S' -o "$1" "${@:2}"; }
else
    timed() { setsid --wait /usr/bin/time -f '%U %S' -o "$1" "${@:2}"; }
fi

row() {
    printf '%-4s %-6s %6s %8.1f %8s %10.1f %16.1f %7.1f %13.1f %8s\n' "$@"
}
printf '%-4s %-6s %6s %8s %8s %10s %16s %7s %13s %8s\n' run procs load wall_s tokens tokens/s \
    "encode tokens/s" cpu_s tokens/cpu_s balance
for run in $(seq 1 "$runs"); do
    # One process, the whole corpus.
    before=$(load)
    start=$(now)
    timed "$work/one.time" "$bin" "${common[@]}" --shard 0/1 -o "$work/one.jsonl" 2>"$work/one.log"
    wall=$(echo "$(now) - $start" | bc -l)
    read -r d1 t1 s1 < <(parse "$work/one.log")
    c1=$(cpu "$work/one.time")
    row "$run" 1 "$before" "$wall" "$t1" "$(echo "$t1 / $wall" | bc -l)" \
        "$(echo "$t1 / $s1" | bc -l)" "$c1" "$(echo "$t1 / $c1" | bc -l)" -

    # Two processes, a shard each, at once.
    before=$(load)
    start=$(now)
    timed "$work/two-0.time" "$bin" "${common[@]}" --shard 0/2 -o "$work/two-0.jsonl" 2>"$work/two-0.log" &
    first=$!
    timed "$work/two-1.time" "$bin" "${common[@]}" --shard 1/2 -o "$work/two-1.jsonl" 2>"$work/two-1.log" &
    second=$!
    wait "$first"
    wait "$second"
    wall=$(echo "$(now) - $start" | bc -l)
    read -r da ta sa < <(parse "$work/two-0.log")
    read -r db tb sb < <(parse "$work/two-1.log")
    if [ $((da + db)) != "$d1" ] || [ $((ta + tb)) != "$t1" ]; then
        echo "the shards wrote $((da + db)) documents and $((ta + tb)) tokens, one process $d1 and $t1" >&2
        exit 1
    fi
    slowest=$(printf '%s\n%s\n' "$sa" "$sb" | sort -g | tail -1)
    c2=$(echo "$(cpu "$work/two-0.time") + $(cpu "$work/two-1.time")" | bc -l)
    larger=$(printf '%s\n%s\n' "$ta" "$tb" | sort -g | tail -1)
    row "$run" 2 "$before" "$wall" "$t1" "$(echo "$t1 / $wall" | bc -l)" \
        "$(echo "$t1 / $slowest" | bc -l)" "$c2" "$(echo "$t1 / $c2" | bc -l)" \
        "$(printf '%.3f' "$(echo "2 * $larger / $t1" | bc -l)")"
done
"$bin" verify "$work/two-0.jsonl" "$work/two-1.jsonl" | tail -1
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
