"""FlagEmbedding's outputs for the Python package's tests, on the committed fixture models:
the cases fixtures/expected/ lacks (FlagEmbedding 1.4.2's defaults, one string instead of a
list, empty strings, `max_length` cuts, `batch_size`, `truncate_dim`, query instructions,
batched `compute_score` over pairs of different lengths, one pair, the scoring helpers) and
FlagEmbedding's README example for BGE-M3, run as it is written (but the GPU it names).

Run from the repository root with the fixtures' virtualenv (fixtures/README.md), which has
torch and FlagEmbedding; the package's own tests never need them:

    fixtures/.venv/bin/python crates/bge-m3-python/tests/reference/generate.py

It writes `<model>.json` beside itself for tiny-pt and tiny-st: `versions`, then each case's
inputs and outputs (floats are exact float32 values; NaN is null). Deterministic: a second run
gives the same files.
"""

import contextlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
MODELS = ("tiny-pt", "tiny-st")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

sys.path.insert(0, HERE)
from cases import (  # noqa: E402
    BATCHED_PAIRS, EMPTY_TEXTS, INSTRUCTION, LONG_TEXT, README_BLOCKS, SHORT_TEXTS, TRUNCATE_DIM,
    hub_cache,
)


def f32(x):
    x = float(np.float32(x))
    return None if math.isnan(x) else x


def vector(v):
    return [f32(x) for x in np.asarray(v, dtype=np.float32).reshape(-1)]


def matrix(m):
    return [vector(row) for row in np.asarray(m, dtype=np.float32)]


def sparse(weights):
    return [[key, f32(value)] for key, value in weights.items()]


def encoded(out):
    """An encode() result, each output as FlagEmbedding gave it (None when absent)."""
    dense, lexical, colbert = out["dense_vecs"], out["lexical_weights"], out["colbert_vecs"]
    single = dense is not None and np.asarray(dense).ndim == 1
    return {
        "dense": None if dense is None else (vector(dense) if single else matrix(dense)),
        "sparse": None if lexical is None else (
            sparse(lexical) if isinstance(lexical, dict) else [sparse(w) for w in lexical]),
        "colbert": None if colbert is None else (
            matrix(colbert) if isinstance(colbert, np.ndarray) else [matrix(c) for c in colbert]),
    }


def scores(result):
    if isinstance(result, list):
        return result
    return {key: (f32(value) if not isinstance(value, list) else [f32(v) for v in value])
            for key, value in result.items()}


def versions():
    def v(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": v("transformers"), "FlagEmbedding": v("FlagEmbedding"),
            "tokenizers": v("tokenizers"), "numpy": np.__version__}


def cases_for(model_dir):
    from FlagEmbedding import BGEM3FlagModel

    m = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu")
    out = {}
    texts = SHORT_TEXTS + [LONG_TEXT]
    # FlagEmbedding 1.4.2's defaults: batch_size 256, max_length 512, dense only.
    out["defaults"] = {"texts": texts, **encoded(m.encode(texts))}
    out["single_string"] = {"text": SHORT_TEXTS[0], **encoded(m.encode(
        SHORT_TEXTS[0], return_dense=True, return_sparse=True, return_colbert_vecs=True))}
    out["empty_strings"] = {"texts": EMPTY_TEXTS, **encoded(m.encode(
        EMPTY_TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True))}
    out["max_length"] = [
        {"max_length": n, "texts": texts, **encoded(m.encode(
            texts, max_length=n, return_dense=True, return_sparse=True, return_colbert_vecs=True))}
        for n in (2, 3, 9, 40)
    ]
    out["batch_size_3"] = {"texts": texts, **encoded(m.encode(
        texts, batch_size=3, max_length=8192, return_dense=True, return_sparse=True,
        return_colbert_vecs=True))}
    lexical = m.encode(texts, return_sparse=True)["lexical_weights"]
    out["convert_id_to_token"] = {
        "lexical_weights": [sparse(w) for w in lexical],
        "tokens": [sparse(w) for w in m.convert_id_to_token(lexical)],
        "one_dict": sparse(m.convert_id_to_token(lexical[0])),
    }
    out["lexical_matching"] = {
        "lexical_weights": [sparse(w) for w in lexical],
        "matrix": [[float(x) for x in row]
                   for row in m.compute_lexical_matching_score(lexical, lexical)],
        "first_second": f32(m.compute_lexical_matching_score(lexical[0], lexical[1])),
    }
    colbert = m.encode(texts, return_dense=False, return_colbert_vecs=True)["colbert_vecs"]
    out["colbert_score"] = {
        "pairs": [[i, j] for i in range(len(texts)) for j in range(len(texts))],
        "scores": [f32(m.colbert_score(colbert[i], colbert[j]).item())
                   for i in range(len(texts)) for j in range(len(texts))],
    }
    # compute_score in one call over pairs of different lengths (FlagEmbedding pads them
    # together), with its defaults and with other settings.
    out["compute_score_defaults"] = {
        "pairs": BATCHED_PAIRS, "scores": scores(m.compute_score(BATCHED_PAIRS))}
    out["compute_score_settings"] = {
        "pairs": BATCHED_PAIRS, "batch_size": 2, "max_query_length": 8,
        "max_passage_length": 20, "weights": [0.4, 0.2, 0.4],
        "scores": scores(m.compute_score(
            BATCHED_PAIRS, batch_size=2, max_query_length=8, max_passage_length=20,
            weights_for_different_modes=[0.4, 0.2, 0.4]))}
    out["compute_score_one_pair"] = {
        "pair": BATCHED_PAIRS[0], "scores": scores(m.compute_score(tuple(BATCHED_PAIRS[0])))}
    out["compute_score_empty"] = {"scores": scores(m.compute_score([]))}

    # Constructor settings: truncate_dim and the query instruction.
    t = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu", truncate_dim=TRUNCATE_DIM,
                       query_instruction_for_retrieval=INSTRUCTION,
                       query_instruction_format="{}: {}")
    out["truncate_dim"] = {"truncate_dim": TRUNCATE_DIM, "texts": SHORT_TEXTS, **encoded(t.encode(
        SHORT_TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True))}
    out["encode_queries"] = {
        "instruction": INSTRUCTION, "format": "{}: {}", "texts": SHORT_TEXTS,
        **encoded(t.encode_queries(SHORT_TEXTS, return_sparse=True))}
    out["encode_corpus"] = {"texts": SHORT_TEXTS, **encoded(t.encode_corpus(SHORT_TEXTS))}
    return out


def readme(model_dir):
    """FlagEmbedding's README blocks for BGE-M3, run with the model id 'BAAI/bge-m3' from a
    Hugging Face cache that holds the fixture model under that id (offline), in a process of
    their own: huggingface_hub reads HF_HUB_CACHE when it is imported."""
    with tempfile.TemporaryDirectory() as cache:
        hub_cache(cache, model_dir)
        child = subprocess.run([sys.executable, __file__, "--readme"], check=True,
                               capture_output=True, text=True,
                               env=dict(os.environ, HF_HUB_CACHE=cache))
    return json.loads(child.stdout.strip().splitlines()[-1])


def readme_worker():
    """Each block twice: with `use_fp16=False` (the reference: FlagEmbedding in float32), and
    as written, `use_fp16=True`, which on the CPU loads the weights in float16 and computes in
    float32 with those rounded weights; the largest difference between the two is recorded."""
    results = {}
    for name, block in README_BLOCKS.items():
        block = block.replace("devices=['cuda:0']", "devices=['cpu']")
        values = {}
        for fp16 in (False, True):
            namespace = {}
            code = block if fp16 else block.replace("use_fp16=True", "use_fp16=False")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)
            values[fp16] = readme_values(name, namespace)
        results[name] = values[False]
        results[name]["use_fp16_max_abs_diff"] = max_diff(values[False], values[True])
    print(json.dumps(results))


def max_diff(a, b):
    """The largest |difference| between the numbers of two equally shaped JSON values."""
    if isinstance(a, dict):
        return max((max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, str):
        return 0.0
    return abs(float(a) - float(b))


def readme_values(name, ns):
    """What each README block shows, from its variables."""
    model = ns["model"]
    if name == "dense":
        return {"similarity": matrix(ns["similarity"])}
    if name == "sparse":
        return {"tokens": [sparse(w) for w in model.convert_id_to_token(ns["output_1"]["lexical_weights"])],
                "lexical_scores": f32(ns["lexical_scores"]),
                "first_first_second": f32(model.compute_lexical_matching_score(
                    ns["output_1"]["lexical_weights"][0], ns["output_1"]["lexical_weights"][1]))}
    if name == "colbert":
        o1, o2 = ns["output_1"], ns["output_2"]
        return {"scores": [f32(model.colbert_score(o1["colbert_vecs"][0], o2["colbert_vecs"][i]).item())
                           for i in (0, 1)]}
    if name == "compute_score":
        return {"scores": scores(model.compute_score(
            ns["sentence_pairs"], max_passage_length=128, weights_for_different_modes=[0.4, 0.2, 0.4]))}
    raise KeyError(name)


def main():
    for name in MODELS:
        model_dir = os.path.join(ROOT, "fixtures", "models", name)
        doc = {"model": name, "versions": versions(), "cases": cases_for(model_dir),
               "readme": readme(model_dir)}
        path = os.path.join(HERE, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        readme_worker()
    else:
        main()
