#!/usr/bin/env python3
"""Server throughput against FlagEmbedding, side by side on the same machine and texts.

    fixtures/.venv/bin/python bench/harness.py [--model DIR] [--out FILE]
        [--scenarios short,passages,document] [--repeat N] [--server-bin PATH]

Three scenarios, with texts generated from a seeded word list and measured with the model's
own tokenizer:

- short:    128 short queries (8-32 tokens), one query per request, from 16 concurrent clients;
- passages: 16 passages of three paragraphs (250-450 tokens), one per request, from 4 clients;
- document: one document of more than 8192 tokens, truncated at 8192 (max_length 8192).

The server (release build, DEVICE=cpu) is started on the full-size random-weight model and its
time from start to a healthy /health is measured (after the model files have been read once,
so from a warm page cache). Each scenario is sent to `/embeddings` (dense + sparse, the
defaults), counting tokens from the responses' `usage`. FlagEmbedding's
`BGEM3FlagModel(DIR, use_fp16=False, devices='cpu').encode()` runs in a subprocess of its own
on the same texts (return_dense, return_sparse, batch_size 12, max_length 8192, torch threads =
cores). Each engine is warmed up with one request before any measurement. Both engines stay
loaded and the runs alternate (server, FlagEmbedding, then FlagEmbedding, server on the next
repeat), so that the load of a shared machine falls on both alike; only one engine computes
at a time. Peak RSS is the kernel's high-water mark (VmHWM) of each engine's own process,
reset before each run through /proc/PID/clear_refs. One passage's dense vector from both
engines is compared (max |diff| <= 1e-4, cosine >= 0.9999) to show that both compute the same
thing.

FlagEmbedding 1.4.2's `encode()` runs its first batch twice (a batch-size probe before its
loop), so besides `encode()` itself the table shows FlagEmbedding's throughput without that
probe pass (timed with forward hooks): the targets are stated against `encode()`; the second
ratio compares the engines pass for pass. "cores" is each engine's CPU time over wall time:
well under the machine's cores means it was starved by other processes; "per CPU-s" is the
ratio of tokens per CPU-second, which such starvation disturbs less (all of encode() counted).

The full model is made by `fixtures/.venv/bin/python fixtures/generate.py --full-size DIR`.
Standard library only, plus torch, tokenizers and FlagEmbedding from the fixtures virtualenv.
"""

import argparse
import datetime
import http.client
import json
import os
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = Path("/tmp/bge-m3-full")
MAX_LENGTH = 8192
BATCH_SIZE = 12
GB = 1e9

# name -> (concurrent clients, target throughput ratio against FlagEmbedding's encode())
SCENARIOS = {
    "short": (16, 1.25),
    "passages": (4, 1.5),
    "document": (1, 1.0),
}
READY_TARGET_S = 15.0
RSS_TARGET_BYTES = 4 * GB
# Dense parity between the engines.
DENSE_ATOL = 1e-4
DENSE_MIN_COSINE = 0.9999

WORDS = """
about above across after again against almost along already also always among animal
answer apple area around article autumn balance bank base basket beach become before
begin behind believe below better between bird black board boat body book border bottle
bridge bright bring brother build business busy buyer cable camera capital careful carry
castle center chair change chapter cheap chemical child choice church circle city clean
clear climate clock close cloud coast coffee cold collect colour common company compare
complete computer condition contain control cotton country course cover create culture
current dance danger daughter decide deep degree design detail develop different dinner
direction distance doctor double dream drive during early earth east easy edge effect
eight energy engine enough evening event every example experience explain factory family
famous farmer father feature field figure final finger finish flower follow forest forward
friend front future garden general gentle glass global golden government green ground group
growth guide happy harbour health heart heavy history holiday horse hospital hour house
human hundred idea important include industry inside island journey judge kitchen knowledge
language large later leader learn letter level light limit little local machine market
matter measure memory method middle minute modern moment money month morning mountain music
narrow nation natural nature network night north number object ocean office often open
order paper parent party pattern people period person picture place planet plant point
police popular position power present problem process product project public question
quick quiet rain reason record region report result river road rock science search season
second simple single sister small society soft south space speed spring square station
stone story street strong student study summer system table teacher theory thousand today
together tomorrow total tower town train travel tree under university valley value village
visit voice water weather window winter without wonder wood word worker world yellow young
""".split()


# ---------------------------------------------------------------------------------------------
# Texts


class Texts:
    """The scenario texts, generated from `seed` and checked with the model's tokenizer."""

    def __init__(self, model_dir: Path, seed: int, doc_tokens: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.rng = random.Random(seed)
        self.scenarios = {
            "short": [self._within(self._query, 8, 32) for _ in range(128)],
            "passages": [self._within(self._passage, 250, 450) for _ in range(16)],
            "document": [self._document(doc_tokens)],
        }

    def length(self, text: str) -> int:
        """Tokens without `<s>` and `</s>`, before truncation."""
        return len(self.tokenizer.encode(text).ids) - 2

    def embedded_tokens(self, texts: list) -> int:
        """Tokens as `usage` counts them: after truncation at 8192, the markers not counted."""
        return sum(min(self.length(t), MAX_LENGTH - 2) for t in texts)

    def describe(self) -> dict:
        info = {}
        for name, texts in self.scenarios.items():
            lengths = [self.length(t) for t in texts]
            info[name] = {"count": len(texts), "min_tokens": min(lengths),
                          "max_tokens": max(lengths),
                          "embedded_tokens": self.embedded_tokens(texts)}
        return info

    def _words(self, low: int, high: int) -> list:
        return [self.rng.choice(WORDS) for _ in range(self.rng.randint(low, high))]

    def _sentence(self) -> str:
        words = self._words(6, 18)
        if len(words) > 9 and self.rng.random() < 0.4:
            words[self.rng.randint(3, len(words) - 4)] += ","
        return " ".join(words).capitalize() + "."

    def _query(self) -> str:
        return " ".join(self._words(3, 9)).capitalize() + "?"

    def _paragraph(self) -> str:
        return " ".join(self._sentence() for _ in range(self.rng.randint(3, 5)))

    def _passage(self) -> str:
        return "\n\n".join(self._paragraph() for _ in range(3))

    def _within(self, make, low: int, high: int) -> str:
        while True:
            text = make()
            if low <= self.length(text) <= high:
                return text

    def _document(self, tokens: int) -> str:
        paragraphs, length = [], 0
        while length <= tokens:
            paragraphs.append(self._paragraph())
            length += self.length(paragraphs[-1])
        document = "\n\n".join(paragraphs)
        assert self.length(document) > tokens, "the document must exceed the truncation length"
        return document


# ---------------------------------------------------------------------------------------------
# Process measurements (Linux /proc)


def read_status(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in bytes."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_bytes": mem}


class Measure:
    """Wall time, CPU time, peak RSS and load around one run in process `pid`."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.peak_reset = reset_peak(self.pid)
        self.load_before = loadavg()
        self.cpu_before = cpu_seconds(self.pid)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu = cpu_seconds(self.pid) - self.cpu_before
        self.peak = read_status(self.pid)["VmHWM"]
        self.load_after = loadavg()
        return False

    def record(self, tokens: int, **extra) -> dict:
        return {
            "seconds": self.seconds,
            "tokens": tokens,
            "tokens_per_s": tokens / self.seconds,
            "cpu_seconds": self.cpu,
            "cores_used": self.cpu / self.seconds,
            "peak_rss_bytes": self.peak,
            "peak_is_per_run": self.peak_reset,
            "loadavg_before": self.load_before,
            "loadavg_after": self.load_after,
            **extra,
        }


def summarize(runs: list) -> dict:
    """The median over the runs (each run is kept beside it)."""
    summary = {
        "tokens": runs[0]["tokens"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
        "cores_used": statistics.median(r["cores_used"] for r in runs),
        "tokens_per_cpu_s": statistics.median(r["tokens"] / r["cpu_seconds"] for r in runs),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "runs": runs,
    }
    if "tokens_per_s_without_probe" in runs[0]:
        summary["tokens_per_s_without_probe"] = statistics.median(
            r["tokens_per_s_without_probe"] for r in runs)
    return summary


def stop(proc: subprocess.Popen):
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log(line: str):
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Our server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float) -> dict:
    """One POST on a fresh connection; raises on anything but 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def health(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


PASS_METRICS = ("bge_m3_pass_texts_count", "bge_m3_pass_texts_sum",
                "bge_m3_pass_padded_tokens_sum", "bge_m3_pass_duration_seconds_sum")


def pass_metrics(port: int) -> dict:
    """The forward-pass counters of `/metrics` (empty when the server has none)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        if response.status != 200:
            return {}
    except OSError:
        return {}
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in PASS_METRICS:
            values[name] = float(value)
    return values


def passes_between(before: dict, after: dict, tokens: int) -> dict:
    """How the server cut one run into forward passes."""
    if not all(name in before and name in after for name in PASS_METRICS):
        return {}
    delta = {name: after[name] - before[name] for name in PASS_METRICS}
    passes = delta["bge_m3_pass_texts_count"]
    return {
        "forward_passes": int(passes),
        "texts_per_pass": delta["bge_m3_pass_texts_sum"] / passes if passes else 0.0,
        "padded_tokens": int(delta["bge_m3_pass_padded_tokens_sum"]),
        # Real tokens (with <s> and </s>) over the padded tokens computed.
        "padding_efficiency": (tokens + 2 * delta["bge_m3_pass_texts_sum"])
        / delta["bge_m3_pass_padded_tokens_sum"] if passes else 0.0,
        "pass_seconds": delta["bge_m3_pass_duration_seconds_sum"],
    }


def server_binary(args) -> Path:
    if args.server_bin:
        return Path(args.server_bin)
    log("building the release server: cargo build --release -p bge-m3-server")
    build = subprocess.run(["cargo", "build", "--release", "-p", "bge-m3-server"], cwd=REPO)
    if build.returncode != 0:
        sys.exit("harness: the build failed; fix it or pass --server-bin PATH")
    return REPO / "target" / "release" / "bge-m3-server"


class Server:
    """The server under test, on a free port; `close` always stops it."""

    name = "server"

    def __init__(self, args, binary: Path):
        self.args = args
        self.port = free_port()
        env = dict(
            os.environ,
            MODEL_PATH=str(args.model),
            HOST="127.0.0.1",
            PORT=str(self.port),
            DEVICE="cpu",
            # The server's default request timeout (300 s) can be shorter than an 8192-token
            # pass on a small, busy machine; the harness bounds every call itself.
            REQUEST_TIMEOUT=str(int(args.timeout)),
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="bge-m3-server-", suffix=".log")
        self.info = {"binary": str(binary), "args": args.server_arg}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(binary), *args.server_arg], env=env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self):
        """Polls /health until 200: the time to ready, from the process's start."""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}")
            try:
                if health(self.port) == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - self.started > self.args.timeout:
                raise TimeoutError(f"the server was not healthy after {self.args.timeout} s")
            time.sleep(0.05)
        self.info["time_to_ready_s"] = time.perf_counter() - self.started
        self.info["load_peak_rss_bytes"] = read_status(self.pid)["VmHWM"]
        log(f"server: healthy after {self.info['time_to_ready_s']:.2f} s, "
            f"RSS peak {self.info['load_peak_rss_bytes'] / GB:.2f} GB")

    def warm_up(self, text: str) -> dict:
        """The warm-up request; its dense and sparse (by id) outputs are the parity check's."""
        start = time.perf_counter()
        body = {"input": [text], "max_length": MAX_LENGTH, "sparse_format": "id"}
        answer = post(self.port, "/embeddings", body, self.args.timeout)
        self.info["warmup_s"] = time.perf_counter() - start
        self.info["warmup_peak_rss_bytes"] = read_status(self.pid)["VmHWM"]
        return {"dense": answer["dense_vecs"][0], "sparse": answer["sparse_vecs"][0]}

    def run(self, name: str, texts: list) -> dict:
        """Sends `texts`, one per request, from the scenario's clients at once."""
        clients = SCENARIOS[name][0]
        barrier = threading.Barrier(clients + 1)
        tokens = [0] * clients
        errors = []

        def client(index: int):
            try:
                barrier.wait()
                for text in texts[index::clients]:
                    body = {"input": [text], "max_length": MAX_LENGTH}
                    answer = post(self.port, "/embeddings", body, self.args.timeout)
                    tokens[index] += answer["usage"]["prompt_tokens"]
            except Exception as e:  # raised again by the main thread
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        before = pass_metrics(self.port)
        with Measure(self.pid) as m:
            barrier.wait()
            for thread in threads:
                thread.join(self.args.timeout)
        if errors:
            raise errors[0]
        if any(thread.is_alive() for thread in threads):
            raise TimeoutError(f"{name}: clients still running after {self.args.timeout} s")
        passes = passes_between(before, pass_metrics(self.port), sum(tokens))
        return m.record(sum(tokens), clients=clients, **passes)

    def close(self):
        stop(self.proc)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            self.log_file.seek(0)
            log(f"server exited with {self.proc.returncode}; log tail:\n"
                f"{self.log_file.read()[-3000:]}")
        self.log_file.close()


# ---------------------------------------------------------------------------------------------
# FlagEmbedding, in a subprocess of its own


class FlagEmbedding:
    """FlagEmbedding's engine in a worker subprocess, driven by JSON lines on its stdin."""

    name = "FlagEmbedding"

    def __init__(self, args, texts: Texts, check_text: str):
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="bge-m3-bench-")
        spec = {"model": str(args.model), "threads": args.threads, "check_text": check_text,
                "scenarios": {name: texts.scenarios[name] for name in args.scenarios}}
        spec_path = Path(self.tmp.name) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = Path(self.tmp.name) / "worker.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--flagembedding-worker", str(spec_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        self.pid = self.proc.pid
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def wait_ready(self):
        self.info = self._reply()
        log(f"FlagEmbedding: ready after {self.info['time_to_ready_s']:.2f} s "
            f"(imports included), RSS peak {self.info['load_peak_rss_bytes'] / GB:.2f} GB")

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def _reply(self) -> dict:
        try:
            reply = self.replies.get(timeout=self.args.timeout)
        except queue.Empty:
            raise TimeoutError(f"FlagEmbedding gave no answer in {self.args.timeout} s")
        if reply is None:
            self.proc.wait(10)
            raise RuntimeError(f"the FlagEmbedding worker exited with status "
                               f"{self.proc.returncode}; log tail:\n"
                               f"{self.log_path.read_text()[-3000:]}")
        return reply

    def _call(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def warm_up(self, _text: str) -> dict:
        reply = self._call({"op": "warm_up"})
        self.info["warmup_s"] = reply.pop("warmup_s")
        self.info["warmup_peak_rss_bytes"] = reply.pop("warmup_peak_rss_bytes")
        return reply

    def run(self, name: str, _texts: list) -> dict:
        return self._call({"op": "run", "scenario": name})

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # the worker's end of input: it exits
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc)
        self.log_file.close()
        self.tmp.cleanup()


def flagembedding_worker(spec_path: str):
    """The worker subprocess: loads BGEM3FlagModel, then answers one JSON line per command."""
    start = time.perf_counter()
    # The protocol owns stdout; anything the libraries print goes to stderr (the log).
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(value: dict):
        replies.write(json.dumps(value) + "\n")
        replies.flush()

    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from importlib.metadata import version

    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(spec["model"], use_fp16=False, devices="cpu")
    pid = os.getpid()
    reply({
        "time_to_ready_s": time.perf_counter() - start,
        "load_peak_rss_bytes": read_status(pid)["VmHWM"],
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "FlagEmbedding": version("FlagEmbedding")},
    })

    # Every forward pass is timed, so that encode()'s batch-size probe pass can be told apart.
    passes = []
    model.model.register_forward_pre_hook(lambda *_: passes.append([time.perf_counter(), 0.0]))

    def done(*_):
        passes[-1][1] = time.perf_counter()

    model.model.register_forward_hook(done)

    def encode(texts):
        return model.encode(texts, batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
                            return_dense=True, return_sparse=True, return_colbert_vecs=False)

    tokens = {}
    for name, texts in spec["scenarios"].items():
        ids = model.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        tokens[name] = sum(len(x) - 2 for x in ids)

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "warm_up":
            warm = time.perf_counter()
            out = encode([spec["check_text"]])
            reply({
                "dense": out["dense_vecs"][0].tolist(),
                "sparse": {k: float(v) for k, v in out["lexical_weights"][0].items()},
                "warmup_s": time.perf_counter() - warm,
                "warmup_peak_rss_bytes": read_status(pid)["VmHWM"],
            })
        elif command["op"] == "run":
            name = command["scenario"]
            passes.clear()
            with Measure(pid) as m:
                encode(spec["scenarios"][name])
            probe = passes[0][1] - passes[0][0]
            reply(m.record(tokens[name], forward_passes=len(passes), probe_seconds=probe,
                           tokens_per_s_without_probe=tokens[name] / (m.seconds - probe)))


# ---------------------------------------------------------------------------------------------
# Comparison


def parity(ours: dict, theirs: dict) -> dict:
    a, b = ours["dense"], theirs["dense"]
    dot = sum(x * y for x, y in zip(a, b))
    norms = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    cosine = dot / norms if norms else 0.0
    max_diff = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
    keys = set(ours["sparse"]) | set(theirs["sparse"])
    sparse_diff = max((abs(ours["sparse"].get(k, 0.0) - theirs["sparse"].get(k, 0.0))
                       for k in keys), default=0.0)
    return {
        "dense_max_abs_diff": max_diff,
        "dense_cosine": cosine,
        "sparse_max_abs_diff": sparse_diff,
        "sparse_same_ids": set(ours["sparse"]) == set(theirs["sparse"]),
        "pass": max_diff <= DENSE_ATOL and cosine >= DENSE_MIN_COSINE,
    }


def compare(scenarios: list, ours: dict, theirs: dict, texts_info: dict) -> list:
    rows = []
    for name in scenarios:
        a, b = ours[name], theirs[name]
        ratio = a["tokens_per_s"] / b["tokens_per_s"]
        rows.append({
            "scenario": name,
            "texts": texts_info[name]["count"],
            "tokens": a["tokens"],
            "clients": SCENARIOS[name][0],
            "ours_tokens_per_s": a["tokens_per_s"],
            "flagembedding_tokens_per_s": b["tokens_per_s"],
            "ratio": ratio,
            "target": SCENARIOS[name][1],
            "pass": ratio >= SCENARIOS[name][1],
            "flagembedding_tokens_per_s_without_probe": b["tokens_per_s_without_probe"],
            "ratio_without_probe": a["tokens_per_s"] / b["tokens_per_s_without_probe"],
            # Tokens per CPU-second of each engine's process: less sensitive to other load
            # than wall time, though spinning threads of a starved engine count as work.
            "ratio_per_cpu_second": a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"],
            "ours_cores_used": a["cores_used"],
            "flagembedding_cores_used": b["cores_used"],
            "ours_peak_rss_bytes": a["peak_rss_bytes"],
            "flagembedding_peak_rss_bytes": b["peak_rss_bytes"],
        })
    return rows


def print_table(rows: list, server: dict, flag: dict, check: dict):
    head = (f"{'scenario':<9}{'texts':>6}{'tokens':>7}{'clients':>8}{'ours tok/s':>11}"
            f"{'FE tok/s':>10}{'ratio':>7}{'target':>7}{'':>5}{'FE no-probe':>12}{'ratio':>7}"
            f"{'cores ours/FE':>14}{'per CPU-s':>10}{'RSS ours/FE GB':>15}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scenario']:<9}{r['texts']:>6}{r['tokens']:>7}{r['clients']:>8}"
              f"{r['ours_tokens_per_s']:>11.1f}{r['flagembedding_tokens_per_s']:>10.1f}"
              f"{r['ratio']:>6.2f}x{r['target']:>6.2f}x{'pass' if r['pass'] else 'MISS':>5}"
              f"{r['flagembedding_tokens_per_s_without_probe']:>12.1f}"
              f"{r['ratio_without_probe']:>6.2f}x"
              f"{r['ours_cores_used']:>9.2f}/{r['flagembedding_cores_used']:.2f}"
              f"{r['ratio_per_cpu_second']:>9.2f}x"
              f"{r['ours_peak_rss_bytes'] / GB:>10.2f}"
              f"/{r['flagembedding_peak_rss_bytes'] / GB:.2f}")
    print()
    rss_ok = server["peak_rss_bytes"] <= RSS_TARGET_BYTES
    ready_ok = server["time_to_ready_s"] < READY_TARGET_S
    print(f"peak RSS, whole run: ours {server['peak_rss_bytes'] / GB:.2f} GB "
          f"(target <= {RSS_TARGET_BYTES / GB:.0f} GB: {'pass' if rss_ok else 'MISS'}), "
          f"FlagEmbedding {flag['peak_rss_bytes'] / GB:.2f} GB")
    print(f"time to ready: ours {server['time_to_ready_s']:.2f} s "
          f"(target < {READY_TARGET_S:.0f} s: {'pass' if ready_ok else 'MISS'}), "
          f"FlagEmbedding {flag['time_to_ready_s']:.2f} s (imports included)")
    print(f"parity on one passage: dense max |diff| {check['dense_max_abs_diff']:.2e}, "
          f"cosine {check['dense_cosine']:.7f}, sparse max |diff| "
          f"{check['sparse_max_abs_diff']:.2e} ({'pass' if check['pass'] else 'FAIL'})")


# ---------------------------------------------------------------------------------------------


def warm_page_cache(model: Path):
    """Reads the model files once, so that time to ready is measured from a warm page cache."""
    start = time.perf_counter()
    for path in sorted(model.iterdir()):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
    log(f"page cache warmed with the model files in {time.perf_counter() - start:.1f} s")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help=f"full-size model directory (default {DEFAULT_MODEL})")
    p.add_argument("--server-bin", help="server binary (default: cargo build --release)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra server flag, repeatable (--server-arg=--max-batch-tokens=8192)")
    p.add_argument("--scenarios", default="short,passages,document",
                   help="comma-separated subset of short,passages,document (default all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each scenario per engine; the median counts (default 1)")
    p.add_argument("--doc-tokens", type=int, default=MAX_LENGTH,
                   help="the document is longer than this many tokens (default 8192)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads for FlagEmbedding (default: the cores)")
    p.add_argument("--seed", type=int, default=6, help="seed of the texts (default 6)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds for each HTTP call, each FlagEmbedding command and each "
                        "engine's start (default 1800)")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = p.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        p.error(f"--scenarios: unknown {unknown}; choose from {','.join(SCENARIOS)}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--flagembedding-worker":
        flagembedding_worker(sys.argv[2])
        return
    args = parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"harness: no model at {args.model}. Create the full-size random model with\n"
                 f"    fixtures/.venv/bin/python fixtures/generate.py --full-size {args.model}\n"
                 f"(see fixtures/README.md), or pass --model DIR.")
    binary = server_binary(args)
    started = datetime.datetime.now().astimezone()
    texts = Texts(args.model, args.seed, args.doc_tokens)
    texts_info = texts.describe()
    for name, info in texts_info.items():
        log(f"texts: {name}: {info['count']} of {info['min_tokens']}-{info['max_tokens']} tokens")
    check_text = texts.scenarios["passages"][0]
    warm_page_cache(args.model)
    load = {"start": loadavg()}

    engines = []
    try:
        # One engine loads at a time, so that the server's time to ready is its own.
        server = Server(args, binary)
        engines.append(server)
        server.wait_ready()
        flag = FlagEmbedding(args, texts, check_text)
        engines.append(flag)
        flag.wait_ready()
        checks = [engine.warm_up(check_text) for engine in engines]
        results = {engine.name: {name: [] for name in args.scenarios} for engine in engines}
        for name in args.scenarios:
            expected = texts.embedded_tokens(texts.scenarios[name])
            for i in range(args.repeat):
                for engine in engines if i % 2 == 0 else engines[::-1]:
                    run = engine.run(name, texts.scenarios[name])
                    if run["tokens"] != expected:
                        raise RuntimeError(f"{engine.name} {name}: {run['tokens']} tokens, "
                                           f"expected {expected}")
                    results[engine.name][name].append(run)
                    if "probe_seconds" in run:
                        probe = f" ({run['probe_seconds']:.2f} s of it the probe pass)"
                    elif run.get("forward_passes"):
                        probe = (f" ({run['forward_passes']} passes of "
                                 f"{run['texts_per_pass']:.1f} texts, "
                                 f"{run['padding_efficiency']:.0%} of tokens not padding)")
                    else:
                        probe = ""
                    log(f"{engine.name}: {name} {i + 1}/{args.repeat}: {run['seconds']:.2f} s"
                        f"{probe}, {run['tokens_per_s']:.1f} tokens/s, "
                        f"{run['cores_used']:.2f} cores, peak RSS "
                        f"{run['peak_rss_bytes'] / GB:.2f} GB, load {run['loadavg_after'][0]:.2f}")
    finally:
        for engine in reversed(engines):
            engine.close()
    load["end"] = loadavg()

    for engine in engines:
        engine.info["scenarios"] = {n: summarize(runs) for n, runs in results[engine.name].items()}
        engine.info["peak_rss_bytes"] = max(
            [engine.info["load_peak_rss_bytes"], engine.info["warmup_peak_rss_bytes"]]
            + [s["peak_rss_bytes"] for s in engine.info["scenarios"].values()])
    check = parity(*checks)
    rows = compare(args.scenarios, server.info["scenarios"], flag.info["scenarios"], texts_info)
    print_table(rows, server.info, flag.info, check)
    print(f"load average (1 min): {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at "
          f"the end; {os.cpu_count()} cores")

    if args.out:
        args.out.write_text(json.dumps({
            "started": started.isoformat(timespec="seconds"),
            "machine": machine(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "texts": texts_info,
            "loadavg": load,
            "summary": rows,
            "targets": {"ratios": {k: v[1] for k, v in SCENARIOS.items()},
                        "time_to_ready_s": READY_TARGET_S, "peak_rss_bytes": RSS_TARGET_BYTES},
            "parity": check,
            "server": server.info,
            "flagembedding": flag.info,
        }, indent=1))
        log(f"results written to {args.out}")
    if not check["pass"]:
        sys.exit("harness: the two engines disagree on the dense vector")


if __name__ == "__main__":
    main()
