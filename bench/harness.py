#!/usr/bin/env python3
"""The server against FlagEmbedding and ONNX Runtime, side by side on the same machine and texts.

    fixtures/.venv/bin/python bench/harness.py [--model DIR] [--out FILE]
        [--scenarios short,passages,document,latency] [--repeat N] [--server-bin PATH]
        [--engines server,server-int8,flagembedding,onnxruntime,onnxruntime-int8]
        [--onnx-cache DIR] [--latency-calls N]

Four scenarios, with texts generated from a seeded word list and measured with the model's
own tokenizer:

- short:    128 short queries (8-32 tokens), one query per request, from 16 concurrent clients;
- passages: 16 passages of five paragraphs (800-860 tokens), one per request, from 4 clients;
- document: one document of more than 8192 tokens, truncated at 8192 (max_length 8192);
- latency:  one query of 19-21 tokens, sent alone to an idle engine `--latency-calls` times
            (default 20), one call after the other: the median and the best latency of each
            engine (the server's HTTP round trip, with its `x-inference-time` beside it;
            FlagEmbedding's `encode()` call; the ONNX Runtime engine's tokenization, run and
            heads), and their ratio to the weight-read floor measured in the same run: the time
            one core takes to read the encoder layers' weights (`encoder.layer.*`, their size
            in f32 from the weights file's index) once, timed on a buffer of that size filled
            beforehand, as the fastest of two numpy reductions (a float32 sum and a 64-bit
            OR), 5 tries each, checked to run on one thread; measured before each repeat of
            the scenario, the fastest of all counts.

Five engines, each in a process of its own, loaded one after the other, then all kept loaded
(the default is all five; `--engines` picks):

- server:        the release build (DEVICE=cpu, DTYPE=f32) on the model directory; its time from start to
                 a healthy /health is measured from a warm page cache (every model file is read
                 once first). Each scenario is sent to `/embeddings` (dense + sparse, the
                 defaults), counting tokens from the responses' `usage`; the latency scenario
                 also records the `x-inference-time` header.
- flagembedding: `BGEM3FlagModel(DIR, use_fp16=False, devices='cpu').encode()` on the same
                 texts (return_dense, return_sparse, batch_size 12, max_length 8192, torch
                 threads = `--threads`), see bench/flagembedding_engine.py.
- onnxruntime:   the encoder exported to ONNX with torch (once, cached in `--onnx-cache`, by
                 default DIR-onnx beside the model directory, made again when the weights file
                 changes), run by the `onnxruntime` package (CPU, intra-op threads =
                 `--threads`, inter-op 1, ORT_ENABLE_ALL) in batches of 12 texts sorted by
                 length, the dense and sparse heads in numpy, see bench/onnxruntime_engine.py.
- server-int8:   the same server binary with DTYPE=int8 (issue 25), measured like the server.
- onnxruntime-int8: ONNX Runtime's own dynamic int8 of the same export (`quantize_dynamic`,
                 per-channel int8 weights, uint8 activations with one scale per tensor at run
                 time; made once and cached beside the export, made again when the export
                 changes), run exactly as the onnxruntime engine.

Each engine is warmed up with one request before any measurement. The runs alternate (server,
FlagEmbedding, ONNX Runtime, then the reverse order on the next repeat), so that the load of a
shared machine falls on all alike; only one engine computes at a time. Peak RSS is the kernel's
high-water mark (VmHWM) of each engine's own process, reset before each run through
/proc/PID/clear_refs. One passage's dense vector from every engine is compared with the
server's (max |diff| <= 1e-4, cosine >= 0.9999) to show that they compute the same thing; the
ONNX Runtime engine also checks that a text padded in a batch gets the vector it gets alone.
The int8 engines' vectors are compared the same way but only reported (their distance from
f32 is what bench/quality.py measures, on a trained model); ONNX Runtime's int8 in particular
quantizes each activation tensor with one scale for the whole batch, so padding a text with
others moves its vector.

FlagEmbedding 1.4.2's `encode()` runs its first batch twice (a batch-size probe before its
loop), so besides `encode()` itself the table shows FlagEmbedding's throughput without that
probe pass (timed with forward hooks): the targets are stated against `encode()`. "cores" is
each engine's CPU time over wall time: well under the machine's cores means it was starved by
other processes; "per CPU-s" is the ratio of tokens per CPU-second, which such starvation
disturbs less (all of encode() counted).

The targets of issue 10, each reported pass or MISS (bench/report.py): the server's tokens/s at
least 1.35x FlagEmbedding's encode() and 1.0x ONNX Runtime's on short queries, 1.95x and 1.0x
on passages, 1.9x FlagEmbedding's on the document; the server's median single-query latency at
most 1.5x the weight-read floor; its peak RSS at most 2.8 GB from start to ready and 3.0 GB over
a run with the document; ready in under 10 s. And issue 25's, for server-int8: at least 1.6x
the f32 server's tokens/s on short queries and passages, and 1.0x ONNX Runtime int8's; a median
single-query latency at most 0.6x the f32 server's; peak RSS at most 1.2 GB from start through every scenario. The int8 pairs (server
int8 / server, server int8 / ONNX Runtime int8, ONNX Runtime int8 / ONNX Runtime) are printed
as ratios of tokens/s and of median latency.

The full model is made by `fixtures/.venv/bin/python fixtures/generate.py --full-size DIR`.
Standard library only, plus torch, tokenizers and FlagEmbedding from the fixtures virtualenv,
and for the ONNX Runtime engine the packages of bench/requirements.txt.
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

import onnxruntime_engine
import report
from measure import Measure, loadavg, machine, read_status, weight_read_floor

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DEFAULT_MODEL = Path("/tmp/bge-m3-full")
MAX_LENGTH = 8192
GB = report.GB

ENGINES = ("server", "server-int8", "flagembedding", "onnxruntime", "onnxruntime-int8")
DEFAULT_ENGINES = ENGINES
# scenario -> concurrent clients of the server (the other engines take the texts in one call)
SCENARIOS = {"short": 16, "passages": 4, "document": 1, "latency": 1}
LATENCY_CALLS = 20

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
        # In this order, so that a seed gives the short queries it gave before the latency
        # scenario and the longer passages existed.
        self.scenarios = {
            "short": [self._within(self._query, 8, 32) for _ in range(128)],
            "passages": [self._within(self._passage, 800, 860) for _ in range(16)],
            "document": [self._document(doc_tokens)],
            "latency": [self._within(self._query, 19, 21)],
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
        return "\n\n".join(self._paragraph() for _ in range(5))

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


def encoder_layer_bytes(model_dir: Path) -> int:
    """The bytes of the `encoder.layer.*` tensors in f32, from the weights file's own index:
    the safetensors header, or a `pytorch_model.bin` mapped by torch without reading it."""
    st = model_dir / "model.safetensors"
    if st.is_file():
        with open(st, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        shapes = [v["shape"] for k, v in header.items() if "encoder.layer." in k]
    else:
        import torch

        state = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", mmap=True,
                           weights_only=True)
        shapes = [list(v.shape) for k, v in state.items() if "encoder.layer." in k]
        del state
    if not shapes:
        raise RuntimeError(f"no encoder.layer.* tensors in {model_dir}")
    total = 0
    for shape in shapes:
        count = 1
        for n in shape:
            count *= n
        total += 4 * count
    return total


# ---------------------------------------------------------------------------------------------
# Processes


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


def git(repo: Path, *args) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def source(path: Path) -> dict:
    """The git commit of the checkout that holds `path`, and whether its tree was dirty."""
    top = git(path if path.is_dir() else path.parent, "rev-parse", "--show-toplevel")
    if not top:
        return {"repo": None}
    status = git(Path(top), "status", "--porcelain")
    return {"repo": top, "commit": git(Path(top), "rev-parse", "HEAD"),
            "dirty": bool(status), "changed_paths": len(status.splitlines())}


# ---------------------------------------------------------------------------------------------
# Our server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float) -> tuple:
    """One POST on a fresh connection: (JSON body, headers); raises on anything but 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data), response.headers
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

    def __init__(self, args, binary: Path, dtype: str = "f32"):
        self.args = args
        self.name = "server" if dtype == "f32" else f"server-{dtype}"
        self.label = report.LABELS[self.name]
        self.exact = dtype == "f32"
        self.port = free_port()
        env = dict(
            os.environ,
            MODEL_PATH=str(args.model),
            HOST="127.0.0.1",
            PORT=str(self.port),
            DEVICE="cpu",
            DTYPE=dtype,
            # The server's default request timeout (300 s) can be shorter than an 8192-token
            # pass on a small, busy machine; the harness bounds every call itself.
            REQUEST_TIMEOUT=str(int(args.timeout)),
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="bge-m3-server-", suffix=".log")
        self.info = {"binary": str(binary), "args": args.server_arg, "dtype": dtype}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(binary), *args.server_arg], env=env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self):
        """Polls /health until 200: the time to ready, from the process's start."""
        while True:
            if self.proc.poll() is not None:
                self.log_file.seek(0)
                raise RuntimeError(f"{self.label} exited with status {self.proc.returncode}; "
                                   f"log tail:\n{self.log_file.read()[-3000:]}")
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
        log(f"{self.label}: healthy after {self.info['time_to_ready_s']:.2f} s, "
            f"RSS peak {self.info['load_peak_rss_bytes'] / GB:.2f} GB")

    def warm_up(self, text: str) -> dict:
        """The warm-up request; its dense and sparse (by id) outputs are the parity check's."""
        start = time.perf_counter()
        body = {"input": [text], "max_length": MAX_LENGTH, "sparse_format": "id"}
        answer, _ = post(self.port, "/embeddings", body, self.args.timeout)
        self.info["warmup_s"] = time.perf_counter() - start
        self.info["warmup_peak_rss_bytes"] = read_status(self.pid)["VmHWM"]
        return {"dense": answer["dense_vecs"][0], "sparse": answer["sparse_vecs"][0]}

    def run(self, name: str, texts: list) -> dict:
        """Sends `texts`, one per request, from the scenario's clients at once."""
        clients = SCENARIOS[name]
        barrier = threading.Barrier(clients + 1)
        tokens = [0] * clients
        errors = []

        def client(index: int):
            try:
                barrier.wait()
                for text in texts[index::clients]:
                    body = {"input": [text], "max_length": MAX_LENGTH}
                    answer, _ = post(self.port, "/embeddings", body, self.args.timeout)
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

    def latency(self, text: str, calls: int) -> dict:
        """Sends `text` alone, `calls` times one after the other, timing each round trip."""
        body = {"input": [text], "max_length": MAX_LENGTH}
        latencies, inference, tokens = [], [], 0
        with Measure(self.pid) as m:
            for _ in range(calls):
                start = time.perf_counter()
                answer, headers = post(self.port, "/embeddings", body, self.args.timeout)
                latencies.append(time.perf_counter() - start)
                inference.append(float(headers["x-inference-time"]) / 1e3)
                tokens += answer["usage"]["prompt_tokens"]
        return m.record(tokens, latencies_s=latencies, inference_s=inference)

    def close(self):
        stop(self.proc)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            self.log_file.seek(0)
            log(f"{self.label} exited with {self.proc.returncode}; log tail:\n"
                f"{self.log_file.read()[-3000:]}")
        self.log_file.close()


# ---------------------------------------------------------------------------------------------
# FlagEmbedding and ONNX Runtime, each in a subprocess of its own


class Worker:
    """An engine in a worker subprocess, driven by one JSON line per command on its stdin and
    answering one JSON line per command (the worker's stdout; its stderr is the log)."""

    name = label = script = ""
    exact = True  # f32: its vectors must match the server's (else only reported)

    def __init__(self, args, spec: dict):
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="bge-m3-bench-")
        spec_path = Path(self.tmp.name) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = Path(self.tmp.name) / "worker.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / self.script), "--worker", str(spec_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        self.pid = self.proc.pid
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def wait_ready(self):
        self.info = self._reply()
        log(f"{self.label}: ready after {self.info['time_to_ready_s']:.2f} s "
            f"(imports included), RSS peak {self.info['load_peak_rss_bytes'] / GB:.2f} GB")

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))
        self.replies.put(None)

    def _reply(self) -> dict:
        try:
            reply = self.replies.get(timeout=self.args.timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.label} gave no answer in {self.args.timeout} s")
        if reply is None:
            self.proc.wait(10)
            raise RuntimeError(f"the {self.label} worker exited with status "
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
        if "process_threads" in reply:  # the ONNX Runtime worker's, once it has run
            self.info["warmup_process_threads"] = reply.pop("process_threads")
        return reply

    def run(self, name: str, _texts: list) -> dict:
        return self._call({"op": "run", "scenario": name})

    def latency(self, _text: str, calls: int) -> dict:
        return self._call({"op": "latency", "calls": calls})

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


class FlagEmbedding(Worker):
    name, label, script = "flagembedding", "FlagEmbedding", "flagembedding_engine.py"

    def __init__(self, args, texts: Texts, scenarios: list):
        super().__init__(args, {
            "model": str(args.model), "threads": args.threads,
            "check_text": texts.scenarios["passages"][0],
            "scenarios": {name: texts.scenarios[name] for name in scenarios}})


class OnnxRuntime(Worker):
    script = "onnxruntime_engine.py"

    def __init__(self, args, texts: Texts, scenarios: list, int8: bool = False):
        self.name = "onnxruntime-int8" if int8 else "onnxruntime"
        self.label = report.LABELS[self.name]
        self.exact = not int8
        super().__init__(args, {
            "cache": str(args.onnx_cache), "tokenizer": str(args.model / "tokenizer.json"),
            "onnx_file": "model-int8.onnx" if int8 else "model.onnx",
            "threads": args.threads, "check_text": texts.scenarios["passages"][0],
            # A query, padded in one batch with the passage, against the query alone.
            "pad_text": texts.scenarios["latency"][0],
            "scenarios": {name: texts.scenarios[name] for name in scenarios}})


def onnx_export(args) -> dict:
    """The cached export of the model directory, made first (in a process of its own, so that
    its memory is not any engine's) when it is missing or was made from other files."""
    record = onnxruntime_engine.cached_export(args.model, args.onnx_cache)
    if record is not None:
        log(f"ONNX Runtime: the export in {args.onnx_cache} matches the model "
            f"(made {record['exported_at']} in {record['seconds']['total']:.0f} s)")
        return {**record, "cached": True}
    log(f"ONNX Runtime: exporting {args.model} to {args.onnx_cache} (minutes, a few GB)")
    done = subprocess.run([sys.executable, str(BENCH / "onnxruntime_engine.py"), "--export",
                           str(args.model), str(args.onnx_cache)], timeout=args.timeout,
                          capture_output=True, text=True)
    record = onnxruntime_engine.cached_export(args.model, args.onnx_cache)
    if done.returncode != 0 or record is None:
        sys.exit(f"harness: the ONNX export failed (status {done.returncode}):\n"
                 f"{done.stderr[-3000:]}")
    log(f"ONNX Runtime: exported in {record['seconds']['total']:.0f} s, opset "
        f"{record['opset']}, {sum(record['bytes'].values()) / GB:.2f} GB, export peak RSS "
        f"{record['peak_rss_bytes'] / GB:.2f} GB")
    return {**record, "cached": False}


def onnx_quantize(args) -> dict:
    """ONNX Runtime's int8 model of the cached export, made first (a process of its own) when
    it is missing or was made from another export."""
    record = onnxruntime_engine.cached_quantized(args.model, args.onnx_cache)
    if record is not None:
        log(f"ONNX Runtime int8: the model in {args.onnx_cache} matches the export "
            f"(made {record['quantized_at']} in {record['seconds']:.0f} s)")
        return {**record, "cached": True}
    log(f"ONNX Runtime int8: quantize_dynamic of the export in {args.onnx_cache}")
    done = subprocess.run([sys.executable, str(BENCH / "onnxruntime_engine.py"), "--quantize",
                           str(args.model), str(args.onnx_cache)], timeout=args.timeout,
                          capture_output=True, text=True)
    record = onnxruntime_engine.cached_quantized(args.model, args.onnx_cache)
    if done.returncode != 0 or record is None:
        sys.exit(f"harness: the int8 quantization failed (status {done.returncode}):\n"
                 f"{done.stderr[-3000:]}")
    log(f"ONNX Runtime int8: quantized in {record['seconds']:.0f} s, "
        f"{sum(record['bytes'].values()) / GB:.2f} GB, {record['ops']['MatMulInteger']} "
        f"MatMulInteger nodes, peak RSS {record['peak_rss_bytes'] / GB:.2f} GB")
    return {**record, "cached": False}


# ---------------------------------------------------------------------------------------------


def warm_page_cache(paths: list):
    """Reads the files once, so that time to ready is measured from a warm page cache."""
    start = time.perf_counter()
    for directory in paths:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                with open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass
    log(f"page cache warmed with {', '.join(map(str, paths))} in "
        f"{time.perf_counter() - start:.1f} s")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help=f"full-size model directory (default {DEFAULT_MODEL})")
    p.add_argument("--server-bin", help="server binary (default: cargo build --release)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra server flag, repeatable (--server-arg=--max-batch-tokens=8192)")
    p.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                   help=f"comma-separated subset of {','.join(ENGINES)} (default "
                        f"{','.join(DEFAULT_ENGINES)}; the ONNX export takes minutes and a few "
                        f"GB the first time)")
    p.add_argument("--onnx-cache", type=Path,
                   help="directory of the ONNX export (default: DIR-onnx beside --model)")
    p.add_argument("--scenarios", default="short,passages,document,latency",
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each scenario per engine; the median counts (default 1)")
    p.add_argument("--latency-calls", type=int, default=LATENCY_CALLS,
                   help=f"calls of the latency scenario per engine and run (default "
                        f"{LATENCY_CALLS})")
    p.add_argument("--doc-tokens", type=int, default=MAX_LENGTH,
                   help="the document is longer than this many tokens (default 8192)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads of FlagEmbedding and intra-op threads of ONNX Runtime "
                        "(default: the cores)")
    p.add_argument("--seed", type=int, default=6, help="seed of the texts (default 6)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds for each HTTP call, each worker command, each engine's start "
                        "and the ONNX export (default 1800)")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = p.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        p.error(f"--scenarios: unknown {unknown}; choose from {','.join(SCENARIOS)}")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown or not args.engines:
        p.error(f"--engines: unknown {unknown}; choose from {','.join(ENGINES)}")
    args.engines = [e for e in ENGINES if e in args.engines]  # always in the same order
    if args.repeat < 1 or args.latency_calls < 1:
        p.error("--repeat and --latency-calls must be at least 1")
    if args.onnx_cache is None:
        args.onnx_cache = args.model.resolve().parent / (args.model.resolve().name + "-onnx")
    return args


def main():
    args = parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"harness: no model at {args.model}. Create the full-size random model with\n"
                 f"    fixtures/.venv/bin/python fixtures/generate.py --full-size {args.model}\n"
                 f"(see fixtures/README.md), or pass --model DIR.")
    servers = [e for e in args.engines if e.startswith("server")]
    binary = server_binary(args) if servers else None
    started = datetime.datetime.now().astimezone()
    texts = Texts(args.model, args.seed, args.doc_tokens)
    texts_info = texts.describe()
    for name, info in texts_info.items():
        log(f"texts: {name}: {info['count']} of {info['min_tokens']}-{info['max_tokens']} tokens")
    onnx_engines = [e for e in args.engines if e.startswith("onnxruntime")]
    export = onnx_export(args) if onnx_engines else None
    quantized = onnx_quantize(args) if "onnxruntime-int8" in args.engines else None
    warm_page_cache([args.model] + ([args.onnx_cache] if export else []))
    layer_bytes = encoder_layer_bytes(args.model) if "latency" in args.scenarios else 0
    load = {"start": loadavg()}

    makers = {"server": lambda: Server(args, binary),
              "server-int8": lambda: Server(args, binary, "int8"),
              "flagembedding": lambda: FlagEmbedding(args, texts, args.scenarios),
              "onnxruntime": lambda: OnnxRuntime(args, texts, args.scenarios),
              "onnxruntime-int8": lambda: OnnxRuntime(args, texts, args.scenarios, int8=True)}
    engines, floors = [], []
    results = {key: {name: [] for name in args.scenarios} for key in args.engines}
    try:
        # One engine loads at a time, so that each one's time to ready is its own.
        for key in args.engines:
            engines.append(makers[key]())
            engines[-1].wait_ready()
        check_text = texts.scenarios["passages"][0]
        vectors = {engine.name: engine.warm_up(check_text) for engine in engines}
        for name in args.scenarios:
            expected = texts.embedded_tokens(texts.scenarios[name])
            if name == "latency":
                expected *= args.latency_calls
            for i in range(args.repeat):
                if name == "latency":
                    floors.append(weight_read_floor(layer_bytes))
                    log(f"weight-read floor {i + 1}/{args.repeat}: {layer_bytes / GB:.3f} GB in "
                        f"{floors[-1]['seconds'] * 1e3:.1f} ms ({floors[-1]['method']})")
                for engine in engines if i % 2 == 0 else engines[::-1]:
                    if name == "latency":
                        run = engine.latency(texts.scenarios[name][0], args.latency_calls)
                    else:
                        run = engine.run(name, texts.scenarios[name])
                    if run["tokens"] != expected:
                        raise RuntimeError(f"{engine.label} {name}: {run['tokens']} tokens, "
                                           f"expected {expected}")
                    results[engine.name][name].append(run)
                    log(f"{engine.label}: {name} {i + 1}/{args.repeat}: {describe_run(run)}")
    finally:
        for engine in reversed(engines):
            engine.close()
    load["end"] = loadavg()

    latency = None
    if "latency" in args.scenarios:
        floor = report.summarize_floor(floors)
        latency = {"tokens_per_call": texts_info["latency"]["embedded_tokens"],
                   "calls_per_engine": args.latency_calls * args.repeat, "floor": floor,
                   "engines": {e.name: report.summarize_latency(results[e.name]["latency"],
                                                                floor["seconds"])
                               for e in engines}}
    throughput = [name for name in args.scenarios if name != "latency"]
    infos = {}
    for engine in engines:
        engine.info["scenarios"] = {n: report.summarize(results[engine.name][n])
                                    for n in throughput}
        runs = [r for n in args.scenarios for r in results[engine.name][n]]
        engine.info["peak_rss_bytes"] = max(
            [engine.info["load_peak_rss_bytes"], engine.info["warmup_peak_rss_bytes"]]
            + [r["peak_rss_bytes"] for r in runs])
        infos[engine.name] = engine.info
    for key in onnx_engines:
        infos[key]["onnx_export"] = export
    if quantized:
        infos["onnxruntime-int8"]["onnx_quantize"] = quantized
    # The reference is the first exact (f32) engine: the server, when it runs.
    reference = next((e for e in engines if e.exact), engines[0]).name
    exact = {e.name: e.exact for e in engines}
    checks = {key: {"reference": reference, **report.parity(vectors[reference], v),
                    "enforced": exact[key] and exact[reference]}
              for key, v in vectors.items() if key != reference}
    rows = report.throughput_rows(throughput, infos, texts_info, SCENARIOS)
    pairs = report.pair_ratios(rows, latency)
    verdicts = report.targets(rows, latency, infos, args.scenarios)

    if rows:
        report.print_throughput(rows)
    if latency:
        report.print_latency(latency)
    report.print_pairs(pairs)
    report.print_targets(verdicts)
    report.print_engines(infos, checks)
    print(f"load average (1 min): {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at "
          f"the end; {os.cpu_count()} cores")

    if args.out:
        args.out.write_text(json.dumps({
            "started": started.isoformat(timespec="seconds"),
            "machine": machine(),
            "source": {"server": {**source(binary), "binary": str(binary),
                                  "binary_mtime": mtime(binary)} if binary else None,
                       "harness": source(REPO)},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "texts": texts_info,
            "loadavg": load,
            "summary": rows,
            "latency": latency,
            "pairs": pairs,
            "targets": verdicts,
            "parity": checks,
            **infos,
        }, indent=1))
        log(f"results written to {args.out}")
    failed = [key for key, check in checks.items() if check["enforced"] and not check["pass"]]
    if failed:
        sys.exit(f"harness: {', '.join(failed)} disagree with {reference} on the dense vector")
    if latency and latency["floor"]["single_threaded"] is False:
        sys.exit("harness: the weight-read floor was not measured on one thread")


def describe_run(run: dict) -> str:
    """One run, for the log."""
    if "latencies_s" in run:
        calls = run["latencies_s"]
        text = (f"median {statistics.median(calls) * 1e3:.1f} ms, best {min(calls) * 1e3:.1f} ms "
                f"over {len(calls)} calls")
    else:
        if "probe_seconds" in run:
            passes = f" ({run['probe_seconds']:.2f} s of it the probe pass)"
        elif run.get("forward_passes"):
            passes = (f" ({run['forward_passes']} passes of {run['texts_per_pass']:.1f} texts)")
        else:
            passes = ""
        text = f"{run['seconds']:.2f} s{passes}, {run['tokens_per_s']:.1f} tokens/s"
    return (f"{text}, {run['cores_used']:.2f} cores, peak RSS {run['peak_rss_bytes'] / GB:.2f} GB, "
            f"load {run['loadavg_after'][0]:.2f}")


def mtime(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return stamp.isoformat(timespec="seconds")


if __name__ == "__main__":
    main()
