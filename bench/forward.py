"""Runs `examples/forward.rs` (this crate) and `bench/torch_forward.py` (PyTorch) side by side,
interleaved (ours, torch, then torch, ours, ...), on the same shapes, and prints the tokens per
second of each, their ratio and the peak resident memory of the forward passes.

    cargo build --release --example forward
    fixtures/.venv/bin/python bench/forward.py --model /tmp/bge-m3-full

Every run is a fresh process that loads the model, warms up (except for the long document,
where one pass is already long) and times a few passes; the table shows the median over rounds,
and the ratio's range over the rounds. `cpu s/pass` is the CPU time (user + system, all threads)
per pass: with other work on the machine, it shows what each side spent apart from waiting.
`--ours NAME=PATH` (repeatable) compares other builds of the example, such as an older commit.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target", "release", "examples", "forward")
TORCH = [sys.executable, os.path.join(ROOT, "bench", "torch_forward.py")]

# (batch, len, warmup, iters)
SHAPES = {
    "1x128": (1, 128, 1, 5),
    "4x128": (4, 128, 1, 3),
    "4x512": (4, 512, 1, 2),
    "1x8192": (1, 8192, 0, 1),
}


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="/tmp/bge-m3-full")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--log", help="append every raw JSON line to this file")
    parser.add_argument("--ours", action="append", metavar="NAME=PATH",
                        help="a build of the `forward` example (default: ours=" + OURS + ")")
    args = parser.parse_args()
    ours = [tuple(o.split("=", 1)) for o in args.ours or [f"ours={OURS}"]]
    impls = [(name, [path]) for name, path in ours] + [("torch", TORCH)]
    rows = []
    for shape in args.shapes.split(","):
        batch, length, warmup, iters = SHAPES[shape]
        common = ["--model", args.model, "--batch", str(batch), "--len", str(length),
                  "--warmup", str(warmup), "--iters", str(iters)]
        results = {name: [] for name, _ in impls}
        for r in range(args.rounds):
            for name, cmd in impls if r % 2 == 0 else reversed(impls):
                result = run(cmd + common)
                result["name"] = name
                results[name].append(result)
                line = json.dumps(result)
                print(line, file=sys.stderr, flush=True)
                if args.log:
                    with open(args.log, "a") as f:
                        f.write(line + "\n")
        torch = results["torch"]
        for name, _ in impls:
            runs = results[name]
            ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs, torch)]
            rows.append((
                shape, name,
                statistics.median(r["tokens_per_s"] for r in runs),
                statistics.median(ratios), min(ratios), max(ratios),
                statistics.median(r["cpu_seconds"] / r["iters"] for r in runs),
                max(r["peak_rss_mib"] for r in runs),
            ))
    print("| shape | build | tokens/s | vs PyTorch (min-max) | cpu s/pass | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|---:|")
    for shape, name, tps, ratio, lo, hi, cpu, rss in rows:
        vs = "" if name == "torch" else f"{ratio:.2f} ({lo:.2f}-{hi:.2f})"
        print(f"| {shape} | {name} | {tps:.1f} | {vs} | {cpu:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
