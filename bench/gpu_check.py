"""The measuring half of `bench/gpu-check.sh`, run on the GPU machine (see that script).

    python3 bench/gpu_check.py --stage target/gpu-check --model /tmp/bge-m3-full --out $OUT

1. The raw forward pass of ours (`examples/forward`, f16 on cuda:0) against PyTorch's
   (`bench/torch_forward.py`: `XLMRobertaModel`, `sdpa`, fp16, `torch.inference_mode()`) on
   identical seeded batches of 32x128, 8x512 and 1x8192 tokens, alternating, each run a fresh
   process; tokens/s of the best pass, and the peak GPU memory of each process read from
   `nvidia-smi` every 50 ms (PyTorch's own allocator peak beside it).
2. The server end to end on the GPU: short queries (6-14 words) from 32 concurrent clients,
   one per request, then 512-token passages from 8 clients, in tokens/s (from `usage`), with
   the GPU's utilisation sampled by `nvidia-smi` meanwhile.

Writes `forward.jsonl`, `server.json` and the server's log under --out, and prints one JSON
summary line (also `summary.json`). Standard library plus `tokenizers` (for the texts' lengths).
"""

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import WORDS  # noqa: E402  (the benchmark's word list)

SHAPES = [(32, 128, 3, 10), (8, 512, 3, 10), (1, 8192, 1, 3)]  # batch, len, warmup, iters
# torch_forward.py's dtype names -> examples/forward's.
DTYPE = {"fp16": "f16", "bf16": "bf16", "fp32": "f32"}


class GpuSampler:
    """Samples nvidia-smi's memory used and utilisation of GPU 0 every `period` seconds (no
    samples where there is no nvidia-smi: a dry run on a CPU machine)."""

    def __init__(self, period=0.05):
        self.samples = []
        self.proc = None
        if shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits",
             f"-lms={int(period * 1000)}", "-i", "0"],
            stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                used, util = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), used, util))

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(2)
        return self.samples


def run_forward(cmd, log):
    sampler = GpuSampler()
    idle = None
    try:
        time.sleep(0.2)
        idle = min((s[1] for s in sampler.samples), default=None)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        samples = sampler.stop()
    log.write(f"$ {' '.join(cmd)}\n{out.stderr[-4000:]}\n")
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {out.returncode}: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["gpu_peak_used_mib"] = max((s[1] for s in samples), default=None)
    result["gpu_idle_used_mib"] = idle
    return result


def forward(args, log):
    ours = os.path.join(args.stage, "bin", "forward")
    torch_cmd = [sys.executable, os.path.join(HERE, "torch_forward.py")]
    rows = []
    with open(os.path.join(args.out, "forward.jsonl"), "w") as jsonl:
        for batch, length, warmup, iters in SHAPES:
            common = ["--model", args.model, "--batch", str(batch), "--len", str(length),
                      "--warmup", str(warmup), "--iters", str(iters)]
            runs = {"ours": [], "torch": []}
            for r in range(args.rounds):
                order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
                for name in order:
                    if name == "ours":
                        cmd = [ours, *common, "--device", args.device, "--dtype", DTYPE[args.dtype]]
                    else:
                        cmd = [*torch_cmd, *common, "--device", args.device, "--dtype", args.dtype]
                    result = run_forward(cmd, log)
                    result["engine"] = name
                    jsonl.write(json.dumps(result) + "\n")
                    runs[name].append(result)
            best = {n: max(r["best_tokens_per_s"] for r in rs) for n, rs in runs.items()}
            memory = {n: max(r["gpu_peak_used_mib"] or 0 for r in rs) for n, rs in runs.items()}
            rows.append({
                "shape": f"{batch}x{length}",
                "ours_tokens_per_s": best["ours"],
                "torch_tokens_per_s": best["torch"],
                "ratio": best["ours"] / best["torch"],
                "ours_gpu_peak_mib": memory["ours"],
                "torch_gpu_peak_mib": memory["torch"],
                "torch_allocator_peak_mib": max(r["gpu_peak_allocated_mib"] or 0
                                                for r in runs["torch"]),
            })
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# The server end to end


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/embeddings", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def texts(model_dir, seed):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_truncation()
    rng = random.Random(seed)

    def words(low, high):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))

    queries = [words(6, 14).capitalize() + "?" for _ in range(2048)]
    passages = []
    while len(passages) < 128:
        text = ""
        while len(tok.encode(text).ids) < 510:
            text += words(8, 16).capitalize() + ". "
        passages.append(text)
    return queries, passages


def load(port, items, clients):
    tokens = [0] * clients
    errors = []

    def client(i):
        try:
            for text in items[i::clients]:
                tokens[i] += post(port, {"input": [text]})["usage"]["prompt_tokens"]
        except Exception as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    sampler = GpuSampler(0.1)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    samples = sampler.stop()
    if errors:
        raise errors[0]
    util = [s[2] for s in samples]
    return {"clients": clients, "requests": len(items), "tokens": sum(tokens),
            "seconds": seconds, "tokens_per_s": sum(tokens) / seconds,
            "gpu_utilisation_mean": statistics.mean(util) if util else None,
            "gpu_memory_peak_mib": max((s[1] for s in samples), default=None)}


def server(args):
    port = free_port()
    env = dict(os.environ, MODEL_PATH=args.model, HOST="127.0.0.1", PORT=str(port),
               DEVICE=args.device, DTYPE=DTYPE[args.dtype], RUST_LOG="info")
    log = open(os.path.join(args.out, "server.log"), "w")
    proc = subprocess.Popen([os.path.join(args.stage, "bin", "bge-m3-server")], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    start = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}; see server.log")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() - start > 180:
                raise TimeoutError("the server was not healthy after 180 s")
            time.sleep(0.1)
        ready = time.perf_counter() - start
        queries, passages = texts(args.model, 7)
        post(port, {"input": queries[:32] + passages[:8]})  # warm-up
        result = {"time_to_ready_s": ready,
                  "short": load(port, queries, 32),
                  "passages": load(port, passages, 8)}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    with open(os.path.join(args.out, "server.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, help="the staged binaries (target/gpu-check)")
    p.add_argument("--model", required=True, help="the full-size model directory")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=2, help="rounds of each forward shape")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    p.add_argument("--dtype", default="fp16", choices=DTYPE, help="default fp16")
    p.add_argument("--shapes", help="BxL,BxL,... instead of 32x128,8x512,1x8192")
    p.add_argument("--skip", default="", help="comma-separated: forward,server")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.shapes:
        global SHAPES
        SHAPES = [(int(b), int(n), 1, 2) for b, n in
                  (shape.split("x") for shape in args.shapes.split(","))]
    summary = {}
    with open(os.path.join(args.out, "forward.log"), "w") as log:
        if "forward" not in skip:
            summary["forward"] = forward(args, log)
    if "server" not in skip:
        summary["server"] = server(args)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
