#!/usr/bin/env python3
"""Corpus throughput: `bge-m3-encode` and the `bge_m3` Python package against FlagEmbedding's
`BGEM3FlagModel.encode()`, side by side on the same machine and texts.

    fixtures/.venv/bin/python bench/corpus.py [--model DIR] [--docs N] [--seed N]
        [--threads N] [--encode-bin PATH] [--bge-m3-python PATH] [--max-batch-tokens N]
        [--tolerance X] [--json FILE] [--keep DIR]

The corpus: `--docs` passages (default 3000) from the seeded word list of bench/harness.py,
their lengths spread log-uniformly over 20-1000 tokens (`--shortest`, `--longest`) of the model's
own tokenizer, one in a hundred (`--long-every`) longer (1000-4000 tokens), written as JSONL (`{"id": ..., "text": ...}`) to a temporary
directory.

The engines, each a process of its own, from a warm page cache, in the order bge-m3-encode,
bge_m3, FlagEmbedding, bge-m3-encode, bge_m3 (the two fast engines run twice, around the slow
one, and the faster of each one's two runs is reported, so that a change of the machine's load
during FlagEmbedding's long run weighs on both alike):

- bge-m3-encode: `bge-m3-encode --model DIR CORPUS.jsonl -o OUT.jsonl --outputs dense,sparse
  --sparse-format id --progress none --threads N`, timed from the process's start to its exit
  (load, encode, write). Its load is estimated by a run on a one-document corpus first, so that
  "encode" is the full run's wall time less that run's.
- bge_m3 (the Python package, crates/bge-m3-python): `BGEM3FlagModel(DIR, threads=N)`, then
  the same `encode()` call as FlagEmbedding's below, timed by itself ("encode") and as the
  process's wall time ("end to end"), in bench/bge_m3_engine.py run by `--bge-m3-python`, an
  interpreter with the package installed (default target/bench-venv/bin/python; make it with
  `python3 -m venv target/bench-venv && target/bench-venv/bin/pip install ./crates/bge-m3-python`,
  a release build).
- FlagEmbedding: `BGEM3FlagModel(DIR, use_fp16=False, devices='cpu')` (torch threads = N), then
  `encode(texts, batch_size=12, max_length=8192, return_dense=True, return_sparse=True)` on
  all the texts in one call, timed by itself ("encode") and as the process's wall time ("end to
  end", imports and load included). FlagEmbedding 1.4.2's encode() runs its first batch twice
  (a batch-size probe); that pass is counted, and its time is in the JSON.

Peak RSS is each process's own maximum resident set (wait4's ru_maxrss). Tokens are the `tokens`
of bge-m3-encode's output (no `<s>` and `</s>`), checked doc by doc against FlagEmbedding's
tokenizer. The outputs must agree, bge-m3-encode's and bge_m3's each with FlagEmbedding's:
every dense component, and every sparse weight by token id (a token missing on one side weighs
0), within `--tolerance` (default 1e-4), and every doc's token count, or the script exits with
status 1 after printing the table (and writing the JSON).

For a quick run, `--model fixtures/models/tiny-pt --docs 50`. The full-size random model
(the default, /tmp/bge-m3-full) is made by `fixtures/.venv/bin/python fixtures/generate.py
--full-size DIR`. Standard library, numpy, torch, tokenizers and FlagEmbedding from the fixtures
virtualenv.
"""

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Texts, git, log, warm_page_cache
from measure import machine, read_status

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path("/tmp/bge-m3-full")
DEFAULT_BIN = REPO / "target" / "release" / "bge-m3-encode"
DEFAULT_PYTHON = REPO / "target" / "bench-venv" / "bin" / "python"
MAX_LENGTH = 8192
BATCH_SIZE = 12
SHORTEST, LONGEST = 20, 1000  # the spread of most passages, in tokens
LONG_EVERY, LONG_RANGE = 100, (1000, 4000)  # one passage in LONG_EVERY is this long
GB = 1e9
FE = "FlagEmbedding"
ENC = "bge-m3-encode"
PY = "bge_m3 (Python)"


# ---------------------------------------------------------------------------------------------
# The corpus


class Corpus(Texts):
    """Passages of sentences from harness.Texts' word list, each grown to a length drawn from
    the seed; Texts' scenarios are not made."""

    def __init__(self, model_dir: Path, seed: int, spread=(SHORTEST, LONGEST), long_every=LONG_EVERY):
        from tokenizers import Tokenizer
        import random

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.rng = random.Random(seed)
        self.spread, self.long_every = spread, long_every

    def target(self, index: int) -> int:
        every = self.long_every
        low, high = LONG_RANGE if every and index % every == every - 1 else self.spread
        return round(math.exp(self.rng.uniform(math.log(low), math.log(high))))

    def passage(self, tokens: int) -> str:
        """Paragraphs of 3-5 sentences until about `tokens` tokens (each sentence's own count
        summed; the passage's is measured afterwards)."""
        paragraphs, sentences, length = [], [], 0
        while length < tokens:
            sentences.append(self._sentence())
            length += self.length(sentences[-1])
            if len(sentences) >= self.rng.randint(3, 5):
                paragraphs.append(" ".join(sentences))
                sentences = []
        if sentences:
            paragraphs.append(" ".join(sentences))
        return "\n\n".join(paragraphs)

    def docs(self, count: int) -> list:
        return [{"id": f"doc-{i:05d}", "text": self.passage(self.target(i))}
                for i in range(count)]


def write_jsonl(path: Path, records: list):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def describe(corpus: Corpus, docs: list) -> dict:
    lengths = [corpus.length(d["text"]) for d in docs]
    return {"docs": len(docs), "tokens_before_truncation": sum(lengths),
            "min_tokens": min(lengths), "median_tokens": statistics.median(lengths),
            "max_tokens": max(lengths),
            "over_1000_tokens": sum(n > 1000 for n in lengths),
            "truncated": sum(n > MAX_LENGTH - 2 for n in lengths)}


# ---------------------------------------------------------------------------------------------
# Processes


def run_measured(cmd: list, log_path: Path, env=None) -> dict:
    """Runs `cmd` to its end, stderr and stdout to `log_path`: its wall time, exit status, CPU
    time and peak RSS, from wait4 on that process alone."""
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "status": proc.returncode,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def check_exit(name: str, run: dict, log_path: Path):
    if run["status"] != 0:
        sys.exit(f"corpus: {name} exited with status {run['status']}; log tail:\n"
                 f"{log_path.read_text(errors='replace')[-3000:]}")


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# bge-m3-encode


def encode_binary(path) -> Path:
    binary = Path(path) if path else DEFAULT_BIN
    if binary.is_file():
        return binary
    if path:
        sys.exit(f"corpus: no binary at {binary}")
    log(f"building {ENC}: cargo build --release -p {ENC}")
    if subprocess.run(["cargo", "build", "--release", "-p", ENC], cwd=REPO).returncode != 0:
        sys.exit("corpus: the build failed; fix it or pass --encode-bin PATH")
    return binary


def run_encode(args, binary: Path, corpus_path: Path, out_path: Path) -> dict:
    cmd = [str(binary), "--model", str(args.model), str(corpus_path), "-o", str(out_path),
           "--outputs", "dense,sparse", "--sparse-format", "id", "--progress", "none",
           "--threads", str(args.threads)]
    if args.max_batch_tokens:
        cmd += ["--max-batch-tokens", str(args.max_batch_tokens)]
    log_path = out_path.with_suffix(".log")
    run = run_measured(cmd, log_path, env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG",
                                                                                   "warn")))
    check_exit(ENC, run, log_path)
    run["summary_line"] = last_line(log_path)
    run["command"] = cmd
    return run


def read_encode_output(path: Path, ids: list) -> dict:
    """bge-m3-encode's JSONL: dense as a float32 matrix, sparse as dicts keyed by token id,
    tokens per doc; checked to hold every id once, in input order."""
    import numpy as np

    dense, sparse, tokens, seen = [], [], [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            seen.append(record["id"])
            tokens.append(record["tokens"])
            dense.append(record["dense"])
            sparse.append({str(k): float(v) for k, v in record["sparse"].items()})
    if seen != ids:
        first = next((i for i, (a, b) in enumerate(zip(seen, ids)) if a != b),
                     min(len(seen), len(ids)))
        sys.exit(f"corpus: {ENC} wrote {len(seen)} records, expected {len(ids)} in input order; "
                 f"the first difference is at line {first + 1}")
    return {"dense": np.asarray(dense, dtype=np.float32), "sparse": sparse, "tokens": tokens}


# ---------------------------------------------------------------------------------------------
# FlagEmbedding, in a process of its own (this script with --fe-worker)


def fe_worker(spec_path: str):
    """Loads the model, encodes the corpus in one encode() call, and writes dense.npy,
    sparse.jsonl and meta.json into the spec's output directory."""
    start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from importlib.metadata import version

    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(spec["model"], use_fp16=False, devices="cpu")
    load_s = time.perf_counter() - start
    load_peak = read_status(os.getpid())["VmHWM"]
    with open(spec["corpus"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    ids = model.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]

    passes = []  # each forward pass timed, to tell encode()'s batch-size probe apart
    model.model.register_forward_pre_hook(lambda *_: passes.append([time.perf_counter(), 0.0]))
    model.model.register_forward_hook(lambda *_: passes[-1].__setitem__(1, time.perf_counter()))
    cpu = time.process_time()
    encode_start = time.perf_counter()
    output = model.encode(texts, batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
                          return_dense=True, return_sparse=True, return_colbert_vecs=False)
    encode_s = time.perf_counter() - encode_start
    cpu = time.process_time() - cpu

    np.save(out / "dense.npy", np.asarray(output["dense_vecs"], dtype=np.float32))
    write_jsonl(out / "sparse.jsonl", [{k: float(v) for k, v in weights.items()}
                                       for weights in output["lexical_weights"]])
    (out / "meta.json").write_text(json.dumps({
        "load_seconds": load_s, "load_peak_rss_bytes": load_peak,
        "encode_seconds": encode_s, "encode_cpu_seconds": cpu,
        "forward_passes": len(passes),
        "probe_seconds": passes[0][1] - passes[0][0] if passes else 0.0,
        "tokens": [len(x) - 2 for x in ids], "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "FlagEmbedding": version("FlagEmbedding")},
    }))


def run_flagembedding(args, corpus_path: Path, out: Path) -> dict:
    import numpy as np

    out.mkdir()
    spec = out / "spec.json"
    spec.write_text(json.dumps({"model": str(args.model), "threads": args.threads,
                                "corpus": str(corpus_path), "out": str(out)}))
    log_path = out / "worker.log"
    run = run_measured([sys.executable, str(Path(__file__).resolve()), "--fe-worker", str(spec)],
                       log_path)
    check_exit(f"the {FE} worker", run, log_path)
    meta = json.loads((out / "meta.json").read_text())
    with open(out / "sparse.jsonl") as f:
        sparse = [json.loads(line) for line in f]
    return {**run, **meta, "dense": np.load(out / "dense.npy"), "sparse": sparse}


# ---------------------------------------------------------------------------------------------
# bge_m3, the Python package (bench/bge_m3_engine.py in the interpreter that has it)


def python_interpreter(path) -> Path:
    python = Path(path) if path else DEFAULT_PYTHON
    if not python.is_file():
        sys.exit(f"corpus: no interpreter at {python} for the bge_m3 engine: make it with\n"
                 f"    python3 -m venv target/bench-venv && "
                 f"target/bench-venv/bin/pip install ./crates/bge-m3-python\n"
                 f"or pass --bge-m3-python PATH")
    return python


def run_python(args, python: Path, corpus_path: Path, out: Path) -> dict:
    import numpy as np

    out.mkdir()
    spec = out / "spec.json"
    spec.write_text(json.dumps({"model": str(args.model), "threads": args.threads,
                                "corpus": str(corpus_path), "out": str(out),
                                "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH}))
    log_path = out / "worker.log"
    engine = Path(__file__).resolve().parent / "bge_m3_engine.py"
    run = run_measured([str(python), str(engine), str(spec)], log_path)
    check_exit(f"the {PY} worker", run, log_path)
    meta = json.loads((out / "meta.json").read_text())
    with open(out / "sparse.jsonl") as f:
        sparse = [json.loads(line) for line in f]
    return {**run, **meta, "dense": np.load(out / "dense.npy"), "sparse": sparse}


# ---------------------------------------------------------------------------------------------
# Agreement and the report


def agreement(ours: dict, theirs: dict, tolerance: float) -> dict:
    """The largest |difference| of dense components and of sparse weights by token id (a token
    on one side only compared with 0), and the docs beyond `tolerance`."""
    import numpy as np

    if ours["dense"].shape != theirs["dense"].shape:
        return {"pass": False, "error": f"dense shapes {ours['dense'].shape} and "
                                        f"{theirs['dense'].shape}"}
    dense_diff = np.abs(ours["dense"] - theirs["dense"]).max(axis=1)
    sparse_diff, only_one_side = [], 0
    for a, b in zip(ours["sparse"], theirs["sparse"]):
        keys = a.keys() | b.keys()
        only_one_side += len(a.keys() ^ b.keys())
        sparse_diff.append(max((abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys), default=0.0))
    token_mismatch = [i for i, (a, b) in enumerate(zip(ours["tokens"], theirs["tokens"])) if a != b]
    dense_bad = [i for i, d in enumerate(dense_diff) if d > tolerance]
    sparse_bad = [i for i, d in enumerate(sparse_diff) if d > tolerance]
    return {
        "tolerance": tolerance,
        "dense_max_abs_diff": float(dense_diff.max()),
        "dense_worst_doc": int(dense_diff.argmax()),
        "sparse_max_abs_diff": float(max(sparse_diff)),
        "sparse_worst_doc": int(np.argmax(sparse_diff)),
        "sparse_tokens_on_one_side_only": only_one_side,
        "docs_dense_beyond": len(dense_bad), "docs_sparse_beyond": len(sparse_bad),
        "docs_token_count_differs": len(token_mismatch),
        "pass": not dense_bad and not sparse_bad and not token_mismatch,
    }


def rates(docs: int, tokens: int, seconds) -> dict:
    if not seconds or seconds <= 0:
        return {"seconds": seconds, "docs_per_s": None, "tokens_per_s": None}
    return {"seconds": seconds, "docs_per_s": docs / seconds, "tokens_per_s": tokens / seconds}


def engine_record(docs: int, tokens: int, end_to_end: float, encode, peak: int, **extra) -> dict:
    return {"docs": docs, "tokens": tokens, "end_to_end": rates(docs, tokens, end_to_end),
            "encode": rates(docs, tokens, encode), "peak_rss_bytes": peak, **extra}


def ratio(a, b):
    return a / b if a and b else None


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(engines: dict, ratios: dict, check: dict):
    print()
    print("| engine | docs | tokens | end-to-end s | tokens/s e2e | encode s | docs/s | "
          "tokens/s | peak RSS GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, e in engines.items():
        print(f"| {name} | {e['docs']} | {e['tokens']} | {e['end_to_end']['seconds']:.2f} | "
              f"{fmt(e['end_to_end']['tokens_per_s'], '.1f')} | "
              f"{fmt(e['encode']['seconds'], '.2f')} | {fmt(e['encode']['docs_per_s'], '.2f')} | "
              f"{fmt(e['encode']['tokens_per_s'], '.1f')} | {e['peak_rss_bytes'] / GB:.2f} |")
    for name, key in ((ENC, "encode_vs_fe"), (PY, "python_vs_fe"), (PY, "python_vs_encode")):
        other = ENC if key == "python_vs_encode" else FE
        print(f"| ratio {name} / {other} | | | | {fmt(ratios[key]['end_to_end'], '.2f')}x | | | "
              f"{fmt(ratios[key]['encode'], '.2f')}x | |")
    print()
    print(f"{ENC} encode s: the corpus run's wall time less a one-document run's "
          f"({engines[ENC]['load_run_seconds']:.2f} s, its load), writing the output included. "
          f"{PY} and {FE} encode s: the encode() call alone ({FE}: its batch-size probe pass, "
          f"{engines[FE]['probe_seconds']:.2f} s, included). End to end: each process's wall "
          f"time, start to exit. {ENC} and {PY}: the faster of two runs, before and after {FE} "
          f"(encode s {engines[ENC]['runs_encode_seconds']} and "
          f"{engines[PY]['runs_encode_seconds']}).")
    for name, result in check.items():
        verdict = "agree" if result["pass"] else "DISAGREE"
        print(f"{name}: outputs {verdict} (tolerance {result['tolerance']:g}): dense max |diff| "
              f"{result.get('dense_max_abs_diff', float('nan')):.3g}, sparse max |diff| "
              f"{result.get('sparse_max_abs_diff', float('nan')):.3g}, "
              f"{result.get('docs_token_count_differs', 'n/a')} docs with another token count")


# ---------------------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help=f"model directory (default {DEFAULT_MODEL})")
    p.add_argument("--docs", type=int, default=3000, help="passages in the corpus (default 3000)")
    p.add_argument("--seed", type=int, default=6, help="seed of the corpus (default 6)")
    p.add_argument("--shortest", type=int, default=SHORTEST,
                   help=f"shortest passage in tokens (default {SHORTEST})")
    p.add_argument("--longest", type=int, default=LONGEST,
                   help=f"longest passage in tokens, but the long ones (default {LONGEST})")
    p.add_argument("--long-every", type=int, default=LONG_EVERY,
                   help=f"one passage in this many is {LONG_RANGE[0]}-{LONG_RANGE[1]} tokens "
                        f"(default {LONG_EVERY}; 0: none)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads of both engines (default: the cores)")
    p.add_argument("--encode-bin", help=f"the {ENC} binary (default {DEFAULT_BIN}, built with "
                                        f"cargo when missing)")
    p.add_argument("--bge-m3-python", help=f"an interpreter with the bge_m3 package installed "
                                           f"(default {DEFAULT_PYTHON})")
    p.add_argument("--max-batch-tokens", type=int, help=f"passed on to {ENC} when given")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest |difference| allowed in dense and sparse (default 1e-4)")
    p.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--keep", type=Path, help="keep the corpus and both outputs in this new "
                                             "directory (default: a temporary one, removed)")
    args = p.parse_args()
    if args.docs < 1 or args.threads < 1:
        p.error("--docs and --threads must be at least 1")
    return args


def main():
    args = parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"corpus: no model at {args.model}. Create the full-size random model with\n"
                 f"    fixtures/.venv/bin/python fixtures/generate.py --full-size {args.model}\n"
                 f"or pass --model DIR (fixtures/models/tiny-pt for a quick run).")
    args.model = args.model.resolve()
    binary = encode_binary(args.encode_bin)
    args.python = python_interpreter(args.bge_m3_python)
    started = datetime.datetime.now().astimezone()
    corpus = Corpus(args.model, args.seed, (args.shortest, args.longest), args.long_every)
    docs = corpus.docs(args.docs)
    info = describe(corpus, docs)
    log(f"corpus: {info['docs']} docs of {info['min_tokens']}-{info['max_tokens']} tokens "
        f"(median {info['median_tokens']}), {info['tokens_before_truncation']} in all")

    if args.keep:
        args.keep.mkdir(parents=True)
        tmp, work = None, args.keep
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bge-m3-corpus-")
        work = Path(tmp.name)
    try:
        result = bench(args, binary, docs, info, work, started)
    finally:
        if tmp:
            tmp.cleanup()
    if not all(check["pass"] for check in result["agreement"].values()):
        sys.exit(1)


def bench(args, binary: Path, docs: list, info: dict, work: Path, started) -> dict:
    corpus_path, probe_path = work / "corpus.jsonl", work / "one.jsonl"
    write_jsonl(corpus_path, docs)
    shortest = min(docs, key=lambda d: len(d["text"]))
    write_jsonl(probe_path, [shortest])
    warm_page_cache([args.model])
    loads = {}

    log(f"{ENC}: a one-document run (its load)")
    probe = run_encode(args, binary, probe_path, work / "one-out.jsonl")
    log(f"{ENC}: {probe['seconds']:.2f} s, peak RSS {probe['peak_rss_bytes'] / GB:.2f} GB")
    enc_runs, py_runs = [], []

    def encode_run(n):
        loads[f"{ENC} {n}"] = os.getloadavg()
        log(f"{ENC} (run {n}): the corpus, {args.threads} threads")
        run = run_encode(args, binary, corpus_path, work / f"encode-out-{n}.jsonl")
        run["encode_seconds"] = run["seconds"] - probe["seconds"]
        log(f"{ENC}: {run['seconds']:.2f} s, peak RSS {run['peak_rss_bytes'] / GB:.2f} GB; "
            f"its summary: {run['summary_line']}")
        enc_runs.append(run)

    def python_run(n):
        loads[f"{PY} {n}"] = os.getloadavg()
        log(f"{PY} (run {n}): load and encode(), {args.threads} threads")
        run = run_python(args, args.python, corpus_path, work / f"bge_m3-{n}")
        log(f"{PY}: {run['seconds']:.2f} s in all, load {run['load_seconds']:.2f} s, encode() "
            f"{run['encode_seconds']:.2f} s, peak RSS {run['peak_rss_bytes'] / GB:.2f} GB")
        py_runs.append(run)

    encode_run(1)
    python_run(1)
    loads[FE] = os.getloadavg()
    log(f"{FE}: load and encode(), {args.threads} torch threads")
    theirs = run_flagembedding(args, corpus_path, work / "flagembedding")
    log(f"{FE}: {theirs['seconds']:.2f} s in all, load {theirs['load_seconds']:.2f} s, encode() "
        f"{theirs['encode_seconds']:.2f} s, peak RSS {theirs['peak_rss_bytes'] / GB:.2f} GB")
    encode_run(2)
    python_run(2)
    loads["end"] = os.getloadavg()

    enc_run = min(enc_runs, key=lambda r: r["encode_seconds"])
    py_run = min(py_runs, key=lambda r: r["encode_seconds"])
    ours = read_encode_output(work / f"encode-out-{enc_runs.index(enc_run) + 1}.jsonl",
                              [d["id"] for d in docs])
    python = {"dense": py_run["dense"], "sparse": py_run["sparse"], "tokens": ours["tokens"]}
    check = {f"{ENC} vs {FE}": agreement(ours, theirs, args.tolerance),
             f"{PY} vs {FE}": agreement(python, theirs, args.tolerance)}
    n, tokens = len(docs), sum(ours["tokens"])
    engines = {
        ENC: engine_record(n, tokens, enc_run["seconds"], enc_run["encode_seconds"],
                           enc_run["peak_rss_bytes"], cpu_seconds=enc_run["cpu_seconds"],
                           load_run_seconds=probe["seconds"],
                           load_run_peak_rss_bytes=probe["peak_rss_bytes"],
                           runs_encode_seconds=[round(r["encode_seconds"], 2) for r in enc_runs],
                           summary_line=enc_run["summary_line"], command=enc_run["command"]),
        PY: engine_record(n, tokens, py_run["seconds"], py_run["encode_seconds"],
                          py_run["peak_rss_bytes"], cpu_seconds=py_run["cpu_seconds"],
                          load_seconds=py_run["load_seconds"],
                          encode_cpu_seconds=py_run["encode_cpu_seconds"],
                          runs_encode_seconds=[round(r["encode_seconds"], 2) for r in py_runs],
                          threads=py_run["threads"], versions=py_run["versions"],
                          torch_importable=py_run["torch_importable"],
                          interpreter=str(args.python)),
        FE: engine_record(n, tokens, theirs["seconds"], theirs["encode_seconds"],
                          theirs["peak_rss_bytes"], cpu_seconds=theirs["cpu_seconds"],
                          load_seconds=theirs["load_seconds"],
                          load_peak_rss_bytes=theirs["load_peak_rss_bytes"],
                          encode_cpu_seconds=theirs["encode_cpu_seconds"],
                          forward_passes=theirs["forward_passes"],
                          probe_seconds=theirs["probe_seconds"], threads=theirs["threads"],
                          versions=theirs["versions"]),
    }

    def ratios_of(a, b):
        return {key: ratio(engines[a][key]["tokens_per_s"], engines[b][key]["tokens_per_s"])
                for key in ("end_to_end", "encode")}

    ratios = {"encode_vs_fe": ratios_of(ENC, FE), "python_vs_fe": ratios_of(PY, FE),
              "python_vs_encode": ratios_of(PY, ENC)}
    print_table(engines, ratios, check)

    result = {
        "date": started.isoformat(timespec="seconds"),
        "git_commit": git(REPO, "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git(REPO, "status", "--porcelain")),
        "machine": {**machine(), "loadavg": os.getloadavg(), "loadavg_before": loads},
        "settings": {"model": str(args.model), "docs": args.docs, "seed": args.seed,
                     "threads": args.threads, "max_batch_tokens": args.max_batch_tokens,
                     "encode_bin": str(binary), "batch_size": BATCH_SIZE,
                     "max_length": MAX_LENGTH},
        "corpus": info,
        "docs": n,
        "tokens": tokens,
        "engines": engines,
        "ratio": ratios,
        "agreement": check,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        log(f"results written to {args.json}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fe-worker":
        fe_worker(sys.argv[2])
    else:
        main()
