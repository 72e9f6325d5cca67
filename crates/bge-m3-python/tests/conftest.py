"""Shared fixtures of the package's tests: the fixture models, FlagEmbedding's reference
outputs (fixtures/expected/ and tests/reference/), the tolerance and the close-enough check.

The tests need the package installed (`pip install ./crates/bge-m3-python`), numpy and
pytest; never torch. The integration tests need the extras' packages and skip without them.
"""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
MODELS = ("tiny-pt", "tiny-st")
# fp32 against FlagEmbedding's fp32: the project's one tolerance (absolute).
TOLERANCE = 1e-5

sys.path.insert(0, str(HERE / "reference"))


def model_dir(name: str) -> Path:
    return ROOT / "fixtures" / "models" / name


def assert_close(actual, expected, what: str, tolerance: float = TOLERANCE):
    """Every value of `actual` within `tolerance` of `expected` (same shape); NaN only where
    the reference has NaN (None in its JSON)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(expected, dtype=object))],
                          dtype=np.float64).reshape(np.shape(expected))
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan), f"{what}: NaN where the reference has none (or not)"
    worst = np.max(np.abs(actual[~nan] - expected[~nan]), initial=0.0)
    assert worst <= tolerance, f"{what}: max |difference| {worst:.3g} > {tolerance}"


def assert_same_weights(actual: dict, expected: list, what: str):
    """A lexical-weights dict against the reference's `[[key, weight], ...]`: the same keys in
    the same order (FlagEmbedding's dict order), weights within the tolerance."""
    assert list(actual) == [key for key, _ in expected], f"{what}: keys or their order differ"
    assert_close(list(actual.values()), [w for _, w in expected], what)


@pytest.fixture(scope="session")
def models():
    """One `BGEM3FlagModel` per fixture model, loaded once (the tests do not change them)."""
    from bge_m3 import BGEM3FlagModel

    return {name: BGEM3FlagModel(str(model_dir(name)), show_progress_bar=False) for name in MODELS}


def expected(name: str) -> dict:
    """fixtures/expected/<name>.json: FlagEmbedding's outputs, as the Rust tests read them."""
    with open(ROOT / "fixtures" / "expected" / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def expected_colbert(name: str) -> dict:
    """fixtures/expected/<name>.colbert.safetensors, read without the safetensors package: an
    8-byte little-endian header length, a JSON header, then the raw f32 tensors."""
    data = (ROOT / "fixtures" / "expected" / f"{name}.colbert.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        start, end = info["data_offsets"]
        tensors[key] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def reference(name: str) -> dict:
    """tests/reference/<name>.json (made by tests/reference/generate.py)."""
    with open(HERE / "reference" / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def server_binary():
    """The bge-m3-server binary for the tests against a server: $BGE_M3_SERVER (.ci/run sets
    it), else the debug build if there is one."""
    path = os.environ.get("BGE_M3_SERVER") or str(ROOT / "target" / "debug" / "bge-m3-server")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
