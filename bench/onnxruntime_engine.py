"""The ONNX Runtime engine of `bench/harness.py`: the encoder exported once with torch, run with
the `onnxruntime` package, and BGE-M3's dense and sparse heads computed in numpy.

    fixtures/.venv/bin/python bench/onnxruntime_engine.py --export MODEL_DIR CACHE_DIR
    fixtures/.venv/bin/python bench/onnxruntime_engine.py --quantize MODEL_DIR CACHE_DIR
    fixtures/.venv/bin/python bench/onnxruntime_engine.py --worker SPEC.json

`--export` loads transformers' `XLMRobertaModel` (fp32, no pooling layer) from the model
directory and exports it with `torch.onnx.export` (the dynamo exporter; dynamic batch and
sequence axes; inputs `input_ids` and `attention_mask`, output `last_hidden_state`; weights in
an external data file, as protobuf caps a model at 2 GB), and converts `sparse_linear.pt`
(loaded with torch) to a numpy file beside it, so that the engine itself needs neither torch
nor transformers, as a deployment of an exported model would not. `export.json`, written last,
records what the export was made from (the weights file's name, size and mtime, and those of
`sparse_linear.pt`): the harness exports again only when one of them changed.

`--quantize` makes ONNX Runtime's own dynamic int8 model of that export, beside it in the
same cache: `onnxruntime.quantization.quantize_dynamic` with `per_channel=True` and
`weight_type=QInt8` (int8 weights, one scale per output channel; activations quantized to
uint8 at run time, one scale per tensor), everything else at its defaults (the op types
MatMul, Gather, Attention, ... of its `IntegerOpsRegistry`, `reduce_range` False, MatMul
with a constant B only), written as `model-int8.onnx` with its weights in
`model-int8.onnx.data`. `quantize.json`, written last, records which export it was made from
(that export's `export.json` key and time), the settings, the time taken, the peak RSS and how
many nodes of each quantized op type the graph has; the harness quantizes again when the
export changed.

`--worker` is the engine's process, driven by the harness with one JSON line per command on
stdin (the protocol of the FlagEmbedding worker). It tokenizes with the model's
`tokenizer.json` (truncation at 8192 tokens), sorts the texts by length (longest first, as
FlagEmbedding's `encode()` does), runs them in batches of 12 padded within each batch, through
one `InferenceSession` (CPU execution provider, `intra_op_num_threads` = the harness's
`--threads`, `inter_op_num_threads` = 1, ORT_ENABLE_ALL), and computes what the server's
`/embeddings` returns (with `model.onnx`, or `model-int8.onnx` for the int8 engine): dense = the `<s>` row of the last hidden state, L2-normalised; sparse =
relu(sparse_linear(h)) per token, max-pooled by token id, without `<s>`, `</s>`, `<pad>` and
`<unk>`, only weights > 0.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

from measure import Measure, read_status

MAX_LENGTH = 8192
BATCH_SIZE = 12
EXPORT_FILES = ("model.onnx", "model.onnx.data", "sparse_linear.npz", "export.json")
QUANTIZED_FILES = ("model-int8.onnx", "model-int8.onnx.data", "quantize.json")
# What `--quantize` passes to quantize_dynamic besides the file names (all else: defaults).
QUANTIZE_SETTINGS = {"per_channel": True, "weight_type": "QInt8",
                     "use_external_data_format": True}


# ---------------------------------------------------------------------------------------------
# Export (a process of its own, run by the harness when the cache is missing or stale)


def weights_file(model_dir: Path) -> Path:
    """The file transformers' `from_pretrained` loads: safetensors first, as it does."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {model_dir}")


def export_key(model_dir: Path) -> dict:
    """What a cached export was made from; any change means exporting again."""
    key = {}
    for label, path in (("weights", weights_file(model_dir)),
                        ("sparse_linear", model_dir / "sparse_linear.pt")):
        stat = path.stat()
        key[label] = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return key


def cached_export(model_dir: Path, cache_dir: Path):
    """The cache's export.json when it matches the model directory and its files are there."""
    try:
        record = json.loads((cache_dir / "export.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != export_key(model_dir):
        return None
    if not all((cache_dir / name).is_file() for name in EXPORT_FILES):
        return None
    return record


def export(model_dir: Path, cache_dir: Path):
    """Exports the encoder and the sparse head into `cache_dir` (see the module's doc)."""
    start = time.perf_counter()
    import numpy as np
    import torch
    from transformers import XLMRobertaModel

    key = export_key(model_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # A stale export (and its int8 model) goes first: the disk may not hold two.
    for name in EXPORT_FILES + QUANTIZED_FILES:
        (cache_dir / name).unlink(missing_ok=True)
    partial = cache_dir / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()

    model = XLMRobertaModel.from_pretrained(model_dir, dtype=torch.float32,
                                            add_pooling_layer=False).eval()
    loaded = time.perf_counter()
    # Example inputs: two sequences, the second padded, so that nothing specialises on "no
    # padding" or on batch 1.
    input_ids = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 2], [0, 5, 6, 7, 2, 1, 1, 1]])
    attention_mask = (input_ids != model.config.pad_token_id).long()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.inference_mode():
        torch.onnx.export(
            model, (input_ids, attention_mask), str(partial / "model.onnx"),
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence},
                            "attention_mask": {0: batch, 1: sequence}},
            dynamo=True, external_data=True)
    exported = time.perf_counter()
    del model

    head = torch.load(model_dir / "sparse_linear.pt", map_location="cpu", weights_only=True)
    np.savez(partial / "sparse_linear.npz", weight=head["weight"].numpy().astype(np.float32),
             bias=head["bias"].numpy().astype(np.float32))

    import onnx

    graph = onnx.load(str(partial / "model.onnx"), load_external_data=False)
    record = {
        "key": key,
        "model_dir": str(model_dir.resolve()),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": {o.domain or "ai.onnx": o.version for o in graph.opset_import},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
        "seconds": {"load": loaded - start, "export": exported - loaded,
                    "total": time.perf_counter() - start},
        "bytes": {name: (partial / name).stat().st_size for name in EXPORT_FILES[:3]},
        "peak_rss_bytes": read_status(os.getpid())["VmHWM"],
    }
    for name in EXPORT_FILES[:3]:
        os.replace(partial / name, cache_dir / name)
    (cache_dir / "export.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(partial, ignore_errors=True)


def cached_quantized(model_dir: Path, cache_dir: Path):
    """The cache's quantize.json when it was made from the cache's current, valid export."""
    export_record = cached_export(model_dir, cache_dir)
    if export_record is None:
        return None
    try:
        record = json.loads((cache_dir / "quantize.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("export") != quantize_source(export_record):
        return None
    if record.get("settings") != QUANTIZE_SETTINGS:
        return None
    if not all((cache_dir / name).is_file() for name in QUANTIZED_FILES):
        return None
    return record


def quantize_source(export_record: dict) -> dict:
    return {"key": export_record["key"], "exported_at": export_record["exported_at"]}


def quantize(model_dir: Path, cache_dir: Path):
    """ONNX Runtime's dynamic int8 of the cached export (see the module's doc)."""
    start = time.perf_counter()
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export_record = cached_export(model_dir, cache_dir)
    if export_record is None:
        sys.exit(f"no valid export of {model_dir} in {cache_dir}: run --export first")
    for name in QUANTIZED_FILES:
        (cache_dir / name).unlink(missing_ok=True)
    partial = cache_dir / f".partial-int8-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    settings = dict(QUANTIZE_SETTINGS)
    quantize_dynamic(cache_dir / "model.onnx", partial / "model-int8.onnx",
                     per_channel=settings["per_channel"],
                     weight_type=getattr(QuantType, settings["weight_type"]),
                     use_external_data_format=settings["use_external_data_format"])
    # quantize_dynamic names the external data file itself; one file, renamed to ours.
    data = [p for p in partial.iterdir() if p.name != "model-int8.onnx"]
    graph = onnx.load(str(partial / "model-int8.onnx"), load_external_data=False)
    locations = {entry.value for t in graph.graph.initializer for entry in t.external_data
                 if entry.key == "location"}
    if len(data) != 1 or locations != {data[0].name}:
        sys.exit(f"quantize: expected one external data file, got {data} and {locations}")
    if data[0].name != "model-int8.onnx.data":
        for t in graph.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = "model-int8.onnx.data"
        os.replace(data[0], partial / "model-int8.onnx.data")
        onnx.save(graph, str(partial / "model-int8.onnx"))
    ops = {}
    for node in graph.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    record = {
        "export": quantize_source(export_record),
        "settings": settings,
        "quantized_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "seconds": time.perf_counter() - start,
        "bytes": {name: (partial / name).stat().st_size for name in QUANTIZED_FILES[:2]},
        "peak_rss_bytes": read_status(os.getpid())["VmHWM"],
        "ops": dict(sorted(ops.items())),
    }
    if not ops.get("MatMulInteger"):
        sys.exit(f"quantize: no MatMul was quantized (ops {record['ops']})")
    for name in QUANTIZED_FILES[:2]:
        os.replace(partial / name, cache_dir / name)
    (cache_dir / "quantize.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(partial, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The engine (the worker process)


class Engine:
    """The exported encoder in one InferenceSession, with the tokenizer and the sparse head."""

    def __init__(self, spec: dict):
        import numpy as np
        import onnxruntime as ort
        import tokenizers
        from tokenizers import Tokenizer

        self.np = np
        cache = Path(spec["cache"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(cache / spec["onnx_file"]), options,
                                            providers=["CPUExecutionProvider"])
        head = np.load(cache / "sparse_linear.npz")
        self.sparse_weight = head["weight"].reshape(-1)  # Linear(hidden, 1)
        self.sparse_bias = float(head["bias"].reshape(()))
        self.tokenizer = Tokenizer.from_file(spec["tokenizer"])
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_LENGTH)
        self.pad_id = self.tokenizer.token_to_id("<pad>")
        self.unused = {self.tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<unk>")}
        self.versions = {"onnxruntime": ort.__version__, "numpy": np.__version__,
                         "tokenizers": tokenizers.__version__}
        self.passes = []  # (texts, padded tokens, seconds) of each session.run

    def tokens(self, texts: list) -> int:
        """Tokens as the server's `usage` counts them: truncated, without `<s>` and `</s>`."""
        return sum(len(e.ids) - 2 for e in self.tokenizer.encode_batch(texts))

    def encode(self, texts: list) -> list:
        """(dense, sparse) of each text, in the order of `texts`."""
        np = self.np
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        results = [None] * len(texts)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start:start + BATCH_SIZE]
            length = max(len(encodings[i].ids) for i in batch)
            input_ids = np.full((len(batch), length), self.pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(batch), length), dtype=np.int64)
            for row, i in enumerate(batch):
                ids = encodings[i].ids
                input_ids[row, :len(ids)] = ids
                attention_mask[row, :len(ids)] = 1
            run_start = time.perf_counter()
            (hidden,) = self.session.run(["last_hidden_state"], {
                "input_ids": input_ids, "attention_mask": attention_mask})
            self.passes.append((len(batch), input_ids.size, time.perf_counter() - run_start))
            cls = hidden[:, 0]
            dense = cls / np.linalg.norm(cls, axis=1, keepdims=True)
            weights = np.maximum(hidden @ self.sparse_weight + self.sparse_bias, 0.0)
            for row, i in enumerate(batch):
                ids = encodings[i].ids
                results[i] = (dense[row], self.pool(ids, weights[row, :len(ids)].tolist()))
        return results

    def pool(self, ids: list, weights: list) -> dict:
        """Max-pools token weights by id, as `BGEM3FlagModel._process_token_weights` does."""
        sparse = {}
        for token, weight in zip(ids, weights):
            if token in self.unused or not weight > 0:
                continue
            key = str(token)
            if weight > sparse.get(key, 0.0):
                sparse[key] = weight
        return sparse


def worker(spec_path: str):
    """Loads the engine, then answers one JSON line per command (see the harness's Worker)."""
    start = time.perf_counter()
    # The protocol owns stdout; anything the libraries print goes to stderr (the log).
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(value: dict):
        replies.write(json.dumps(value) + "\n")
        replies.flush()

    spec = json.loads(Path(spec_path).read_text())
    engine = Engine(spec)
    pid = os.getpid()
    reply({
        "time_to_ready_s": time.perf_counter() - start,
        "load_peak_rss_bytes": read_status(pid)["VmHWM"],
        "threads": spec["threads"],
        "process_threads": read_status(pid)["Threads"],
        "session_options": {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1,
                            "graph_optimization_level": "ORT_ENABLE_ALL",
                            "providers": engine.session.get_providers()},
        "versions": engine.versions,
    })
    tokens = {name: engine.tokens(texts) for name, texts in spec["scenarios"].items()}

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "warm_up":
            warm = time.perf_counter()
            ((dense, sparse),) = engine.encode([spec["check_text"]])
            warmup_s = time.perf_counter() - warm
            # A query alone, and padded in one batch with the longer check text: padding must
            # not change its vector (the export must not have specialised on unpadded inputs).
            ((alone, _),) = engine.encode([spec["pad_text"]])
            _, (padded, _) = engine.encode([spec["check_text"], spec["pad_text"]])
            reply({
                "dense": dense.tolist(),
                "sparse": sparse,
                "padded_dense_max_abs_diff": float(abs(padded - alone).max()),
                "warmup_s": warmup_s,
                "warmup_peak_rss_bytes": read_status(pid)["VmHWM"],
                "process_threads": read_status(pid)["Threads"],
            })
        elif command["op"] == "run":
            name = command["scenario"]
            engine.passes.clear()
            with Measure(pid) as m:
                engine.encode(spec["scenarios"][name])
            reply(m.record(tokens[name], **pass_counts(engine.passes)))
        elif command["op"] == "latency":
            (text,) = spec["scenarios"]["latency"]
            calls, forward = [], []
            with Measure(pid) as m:
                for _ in range(command["calls"]):
                    engine.passes.clear()
                    call = time.perf_counter()
                    engine.encode([text])
                    calls.append(time.perf_counter() - call)
                    forward.append(engine.passes[0][2])
            reply(m.record(tokens["latency"] * len(calls), latencies_s=calls,
                           forward_s=forward))


def pass_counts(passes: list) -> dict:
    return {
        "forward_passes": len(passes),
        "texts_per_pass": sum(p[0] for p in passes) / len(passes),
        "padded_tokens": sum(p[1] for p in passes),
        "pass_seconds": sum(p[2] for p in passes),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--export":
        export(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--quantize":
        quantize(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        sys.exit(__doc__)
