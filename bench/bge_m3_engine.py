"""The `bge_m3` Python package as an engine of bench/corpus.py, in a process of its own, run by
an interpreter that has the package installed (release build) and no torch:

    PYTHON bench/bge_m3_engine.py SPEC.json

SPEC.json: {"model", "threads", "corpus" (JSONL), "out", "batch_size", "max_length"}. It loads
`BGEM3FlagModel(model, threads=threads)`, then calls `encode(texts, batch_size, max_length,
return_dense=True, return_sparse=True)` once on every text, as FlagEmbedding's engine does, and
writes dense.npy, sparse.jsonl and meta.json (load and encode seconds, CPU seconds, versions)
into `out`.
"""

import json
import os
import sys
import time
from pathlib import Path

from measure import read_status


def main(spec_path: str):
    start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    import numpy as np
    from importlib.metadata import version

    from bge_m3 import BGEM3FlagModel

    model = BGEM3FlagModel(spec["model"], threads=spec["threads"], show_progress_bar=False)
    load_s = time.perf_counter() - start
    load_peak = read_status(os.getpid())["VmHWM"]
    with open(spec["corpus"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    cpu = time.process_time()
    encode_start = time.perf_counter()
    output = model.encode(texts, batch_size=spec["batch_size"], max_length=spec["max_length"],
                          return_dense=True, return_sparse=True, return_colbert_vecs=False)
    encode_s = time.perf_counter() - encode_start
    cpu = time.process_time() - cpu
    np.save(out / "dense.npy", output["dense_vecs"])
    with open(out / "sparse.jsonl", "w") as f:
        for weights in output["lexical_weights"]:
            f.write(json.dumps(weights) + "\n")
    (out / "meta.json").write_text(json.dumps({
        "load_seconds": load_s, "load_peak_rss_bytes": load_peak, "encode_seconds": encode_s,
        "encode_cpu_seconds": cpu, "threads": model.threads, "dtype": model.dtype,
        "versions": {"bge_m3": version("bge-m3"), "numpy": np.__version__},
        "torch_importable": _has("torch"),
    }))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main(sys.argv[1])
