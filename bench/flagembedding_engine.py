"""The FlagEmbedding engine of `bench/harness.py`, the reference implementation, in a process of
its own:

    fixtures/.venv/bin/python bench/flagembedding_engine.py --worker SPEC.json

It loads `BGEM3FlagModel(DIR, use_fp16=False, devices='cpu')` (torch threads = the harness's
`--threads`), then answers one JSON line per command on stdin: `encode(texts, batch_size=12,
max_length=8192, return_dense=True, return_sparse=True)` on the scenario's texts, each forward
pass timed with hooks, because FlagEmbedding 1.4.2's `encode()` runs its first batch twice (a
batch-size probe before its loop).
"""

import json
import os
import sys
import time
from pathlib import Path

from measure import Measure, read_status

MAX_LENGTH = 8192
BATCH_SIZE = 12


def worker(spec_path: str):
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
        elif command["op"] == "latency":
            # One text: encode() runs the probe pass and then the same pass again.
            calls, forward, without_probe, count = [], [], [], 0
            with Measure(pid) as m:
                for _ in range(command["calls"]):
                    passes.clear()
                    call = time.perf_counter()
                    encode(spec["scenarios"]["latency"])
                    calls.append(time.perf_counter() - call)
                    forward.append(passes[-1][1] - passes[-1][0])
                    without_probe.append(calls[-1] - (passes[0][1] - passes[0][0]))
                    count += len(passes)
            reply(m.record(tokens["latency"] * len(calls), latencies_s=calls, forward_s=forward,
                           latencies_without_probe_s=without_probe, forward_passes=count))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        sys.exit(__doc__)
