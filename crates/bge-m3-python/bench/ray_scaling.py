"""Issue 27's Ray figure: tokens/s of examples/ray_encode.py's pipeline with one encoder actor
against two, each with one thread (`--cpus-per-actor 1`), on the corpus of
crates/bge-m3-encode/bench/shards.sh (same seed and words), alternately (one, two, one, two,
...), in one local Ray cluster started once (3 logical CPUs: one per actor, one for the read
and write tasks), so that a change in the machine's load falls on both alike.

For each run it prints: the wall time of the whole pipeline (the actors' model loads and the
Parquet writes included) and the tokens/s over it; "encode tokens/s" over the span from the
first batch an actor starts to the last one it finishes (loads excluded); "cpu_s", the CPU time
the actors' processes spent in `encode` (user + system, all their threads), and "tokens/cpu_s"
the tokens over it: what the work costs whatever else runs. And the load average before each
run: on a shared machine, a ratio is only worth what the load allows. Then the ratios, pair by
pair (each two-actor run against the one-actor run before it).

Usage: python crates/bge-m3-python/bench/ray_scaling.py MODEL_DIR [RUNS] [DOCS]
e.g.   target/python-venv/bin/python crates/bge-m3-python/bench/ray_scaling.py /tmp/bge-m3-full 3 48

`--colbert-cost` (MODEL_DIR [RUNS] [DOCS]) measures instead what the example's Encoder pays for
its token counts: the CPU time of `encode` with and without the ColBERT vectors, alternately.
(a release build of the package: pip install ./crates/bge-m3-python; `ray[data]` installed)
"""

import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import ray.cloudpickle

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ray_encode.py"
spec = importlib.util.spec_from_file_location("ray_encode", EXAMPLE)
ray_encode = importlib.util.module_from_spec(spec)
sys.modules["ray_encode"] = ray_encode
spec.loader.exec_module(ray_encode)
# The workers do not have the example on their path: its functions travel by value.
ray.cloudpickle.register_pickle_by_value(ray_encode)


@ray.remote(num_cpus=0)
class Stats:
    """What each actor reports after each batch: its pid -> (cpu, tokens, first start, last end)."""

    def __init__(self):
        self.by_pid = {}

    def add(self, pid, cpu, tokens, start, end):
        old = self.by_pid.get(pid, (0.0, 0, start, end))
        self.by_pid[pid] = (old[0] + cpu, old[1] + tokens, min(old[2], start), max(old[3], end))

    def get(self):
        return self.by_pid


class TimedEncoder(ray_encode.Encoder):
    def __init__(self, stats_name, **kwargs):
        super().__init__(**kwargs)
        self.stats = ray.get_actor(stats_name)

    def __call__(self, batch):
        start, cpu = time.time(), time.process_time()
        table = super().__call__(batch)
        cpu = time.process_time() - cpu
        tokens = sum(table.column("tokens").to_pylist())
        ray.get(self.stats.add.remote(os.getpid(), cpu, tokens, start, time.time()))
        return table


def corpus(path: Path, docs: int) -> None:
    """crates/bge-m3-encode/bench/shards.sh's corpus: 10 to 60 words, seed 27."""
    random.seed(27)
    words = ("vector search hybrid lexical dense the of retrieval passage query index embedding "
             "multilingual Qdrant BM25 sparse colbert shard manifest corpus").split()
    with open(path, "w") as f:
        for i in range(docs):
            text = " ".join(random.choice(words) for _ in range(random.randint(10, 60)))
            f.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")


def run(model: str, path: Path, out: Path, actors: int, number: int) -> dict:
    name = f"stats-{number}"
    stats = Stats.options(name=name).remote()
    _, args = ray_encode.arguments([str(path), "-o", str(out), "--model", model, "--actors",
                                    str(actors), "--cpus-per-actor", "1", "--batch-size", "4"])
    # Batches of 4 texts, so that the second actor gets its share of 48 passages.
    ranges = ray_encode.plan([str(path)], 4, ray_encode.MAX_TEXT_CHARS)
    started = time.monotonic()
    ds = ray_encode.pipeline(ranges, ["dense", "sparse"], None, args, encoder=TimedEncoder,
                             encoder_kwargs={"stats_name": name})
    ds.write_parquet(str(out))
    wall = time.monotonic() - started
    by_pid = ray.get(stats.get.remote())
    ray.kill(stats)
    tokens = sum(t for _, t, _, _ in by_pid.values())
    cpu = sum(c for c, _, _, _ in by_pid.values())
    span = max(e for _, _, _, e in by_pid.values()) - min(s for _, _, s, _ in by_pid.values())
    return {"actors": actors, "processes": len(by_pid), "wall": wall, "tokens": tokens,
            "tokens_per_s": tokens / wall, "encode_tokens_per_s": tokens / span, "cpu": cpu,
            "tokens_per_cpu_s": tokens / cpu}


def colbert_cost(model: str, docs: int, runs: int) -> None:
    """What asking for the ColBERT vectors (for the token counts) costs the Encoder: the CPU
    time of `encode` with dense and sparse, against dense, sparse and ColBERT, alternately, in
    this process, one thread."""
    from bge_m3 import BGEM3FlagModel

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "corpus.jsonl"
        corpus(path, docs)
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    m = BGEM3FlagModel(model, threads=1, show_progress_bar=False)
    cpu = {False: [], True: []}
    for i in range(2 * runs):
        colbert = bool(i % 2)
        start = time.process_time()
        m.encode(texts, batch_size=8, max_length=8192, return_dense=True, return_sparse=True,
                 return_colbert_vecs=colbert)
        cpu[colbert].append(time.process_time() - start)
        print(f"run {i}: colbert {colbert}: {cpu[colbert][-1]:.2f} CPU s", flush=True)
    ratios = [b / a for a, b in zip(cpu[False], cpu[True])]
    print(f"with colbert / without: median {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f})")


def main() -> None:
    if "--colbert-cost" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--colbert-cost"]
        return colbert_cost(args[0], int(args[2]) if len(args) > 2 else 48,
                            int(args[1]) if len(args) > 1 else 3)
    model = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    docs = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "corpus.jsonl"
        corpus(path, docs)
        for i in range(2 * runs):
            actors = 1 + i % 2
            load = os.getloadavg()[0]
            r = run(model, path, Path(work) / f"out-{i}", actors, i)
            r["load"] = load
            results.append(r)
            print(f"run {i}: {actors} actor(s) ({r['processes']} encoded), load {load:.1f}: "
                  f"{r['tokens']} tokens in {r['wall']:.1f} s, {r['tokens_per_s']:.1f} tokens/s, "
                  f"encode {r['encode_tokens_per_s']:.1f} tokens/s, cpu {r['cpu']:.1f} s, "
                  f"{r['tokens_per_cpu_s']:.0f} tokens/cpu_s", flush=True)
    pairs = list(zip(results[0::2], results[1::2]))
    for key in ("tokens_per_s", "encode_tokens_per_s"):
        ratios = [two[key] / one[key] for one, two in pairs]
        print(f"{key}: two/one median {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    for actors in (1, 2):
        own = [r for r in results if r["actors"] == actors]
        print(f"{actors} actor(s): tokens/s median "
              f"{statistics.median(r['tokens_per_s'] for r in own):.1f} "
              f"({min(r['tokens_per_s'] for r in own):.1f}-"
              f"{max(r['tokens_per_s'] for r in own):.1f}), tokens/cpu_s median "
              f"{statistics.median(r['tokens_per_cpu_s'] for r in own):.0f}")


if __name__ == "__main__":
    main()
