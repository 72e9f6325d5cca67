"""Bad arguments raise TypeError or ValueError naming the argument; a missing model raises
with what was tried; a Rust panic becomes a RuntimeError; the model goes on after each."""

import numpy as np
import pytest
from conftest import model_dir

from bge_m3 import BGEM3FlagModel, _bge_m3


@pytest.fixture(scope="module")
def model(models):
    return models["tiny-pt"]


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(sentences=["a", 3]), TypeError, "`sentences[1]` must be a str, got int"),
    (dict(sentences={"a"}), TypeError, "`sentences` must be a list of str, got set"),
    (dict(sentences=None), TypeError, "`sentences` must be a list of str, got NoneType"),
    (dict(sentences=["a"], batch_size="12"), TypeError, "`batch_size` must be an int, got str"),
    (dict(sentences=["a"], batch_size=0), ValueError, "invalid `batch_size`: must be at least 1, got 0"),
    (dict(sentences=["a"], batch_size=-5), ValueError, "invalid `batch_size`: -5 is negative"),
    (dict(sentences=["a"], batch_size=2**70), ValueError, "invalid `batch_size`"),
    (dict(sentences=["a"], max_length=1.5), TypeError, "`max_length` must be an int, got float"),
    (dict(sentences=["a"], max_length=0), ValueError, "invalid `max_length`: must be between 1 and 8192, got 0"),
    (dict(sentences=["a"], max_length=8193), ValueError, "invalid `max_length`: must be between 1 and 8192, got 8193"),
    (dict(sentences=["a"], return_sparse="yes"), TypeError, "return_sparse"),
    (dict(sentences=["a"], return_dense=False), ValueError,
     "invalid `return_dense`, `return_sparse`, `return_colbert_vecs`: at least one output"),
    (dict(sentences=["a"], convert_to_tensor=True), TypeError, "unexpected keyword argument 'convert_to_tensor'"),
])
def test_encode_names_the_bad_argument(model, kwargs, error, words):
    with pytest.raises(error) as raised:
        model.encode(**kwargs)
    assert words in str(raised.value)
    # The model goes on.
    assert model.encode(["still working"])["dense_vecs"].shape == (1, 32)


def test_numpy_integers_are_ints(model):
    out = model.encode(["a"], batch_size=np.int64(4), max_length=np.int32(16))
    assert out["dense_vecs"].shape == (1, 32)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(sentence_pairs=[["a", "b"], ["c"]]), ValueError, "invalid `sentence_pairs[1]`: a pair has 2 texts, this one has 1"),
    (dict(sentence_pairs=[["a", 2]]), TypeError, "`sentence_pairs[0][1]` must be a str, got int"),
    (dict(sentence_pairs=[["a", "b"], "cd"]), TypeError, "`sentence_pairs[1]` must be a (query, passage) pair, got str"),
    (dict(sentence_pairs=[["a", "b"]], max_query_length=0), ValueError, "invalid `max_query_length`: must be between 1 and 8192, got 0"),
    (dict(sentence_pairs=[["a", "b"]], max_passage_length=9000), ValueError, "invalid `max_passage_length`"),
    (dict(sentence_pairs=[["a", "b"]], batch_size=0), ValueError, "invalid `batch_size`"),
    (dict(sentence_pairs=[["a", "b"]], weights_for_different_modes=[1.0, 1.0]), ValueError,
     "invalid `weights_for_different_modes`: three weights (dense, sparse, colbert) are needed, got 2"),
    (dict(sentence_pairs=[["a", "b"]], weights_for_different_modes=[1.0, -1.0, 1.0]), ValueError,
     "invalid `weights_for_different_modes`: each weight must be a finite number >= 0"),
    (dict(sentence_pairs=[["a", "b"]], weights_for_different_modes=[0, 0, 0]), ValueError,
     "invalid `weights_for_different_modes`: the weights must have a positive sum"),
    (dict(sentence_pairs=[["a", "b"]], weights_for_different_modes="abc"), TypeError, "weights_for_different_modes"),
    (dict(sentence_pairs=[["a", "b"]], device="cpu"), TypeError, "unexpected keyword argument 'device'"),
])
def test_compute_score_names_the_bad_argument(model, kwargs, error, words):
    with pytest.raises(error) as raised:
        model.compute_score(**kwargs)
    assert words in str(raised.value)


def test_scoring_helpers_name_the_bad_argument(model):
    with pytest.raises(ValueError, match="two dicts or two lists of dicts, got dict and list"):
        model.compute_lexical_matching_score({"1": 0.5}, [{"1": 0.5}])
    with pytest.raises(TypeError, match=r"`lexical_weights_2\[1\]` must be a dict, got int"):
        model.compute_lexical_matching_score([{"1": 0.5}], [{"1": 0.5}, 3])
    with pytest.raises(TypeError, match="the weight of 1 must be a number, got str"):
        model.compute_lexical_matching_score({"1": "heavy"}, {"1": 0.5})
    with pytest.raises(ValueError, match="invalid `p_reps`: its rows have 4 values but those of `q_reps` 3"):
        model.colbert_score(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="invalid `q_reps`: a \\(tokens, dim\\) array is needed, got 1 dimensions"):
        model.colbert_score(np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="invalid `lexical_weights`: its keys are token ids"):
        model.convert_id_to_token({"What": 0.5})
    with pytest.raises(ValueError, match="invalid `lexical_weights`: -1 is negative"):
        model.convert_id_to_token({"-1": 0.5})
    with pytest.raises(ValueError, match="invalid `lexical_weights`: 4294967296 is not a token id"):
        model.convert_id_to_token({"4294967296": 0.5})
    # An id past the vocabulary decodes to "", as Hugging Face's tokenizer decodes it.
    assert model.convert_id_to_token({"999999": 0.5}) == {"": 0.5}


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(normalize_embeddings=False), ValueError, "invalid `normalize_embeddings`: only True is supported"),
    (dict(pooling_method="mean"), ValueError, "invalid `pooling_method`: only 'cls' is supported"),
    (dict(colbert_dim=64), ValueError, "invalid `colbert_dim`: the model's ColBERT vectors have 32 values"),
    (dict(threads=0), ValueError, "invalid `threads`: must be at least 1"),
    (dict(threads="two"), TypeError, "`threads` must be an int, got str"),
    (dict(dtype=32), TypeError, "`dtype` must be a str, got int"),
    (dict(cache_dir=3), TypeError, "`cache_dir` must be a str or a path, got int"),
    (dict(dtype="int4"), ValueError, "invalid `dtype`: \"int4\" is not one of f32, f16, bf16, int8"),
    (dict(dtype="int8", devices="cuda:0"), ValueError, "invalid `dtype`: int8 runs on the CPU only"),
    (dict(devices="tpu"), ValueError, "invalid `devices`: \"tpu\" is not one of auto, cpu, cuda, cuda:N"),
    (dict(devices=["cpu", "cpu"]), ValueError, "invalid `devices`: this engine runs one model on one device"),
    (dict(devices=1.5), TypeError, "`devices` must be a str, an int or a list of one, got float"),
    (dict(devices="cuda:0"), RuntimeError, "this build has no CUDA support"),
    (dict(max_batch_tokens=0), ValueError, "invalid `max_batch_tokens`: must be at least 1, got 0"),
])
def test_the_constructor_names_the_bad_argument(kwargs, error, words):
    with pytest.raises(error) as raised:
        BGEM3FlagModel(str(model_dir("tiny-pt")), **kwargs)
    assert words in str(raised.value)


def test_a_missing_model_says_what_was_tried(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="is neither a model directory .* nor a Hugging Face Hub repository id"):
        BGEM3FlagModel(str(tmp_path / "no" / "such" / "model"))
    with pytest.raises(TypeError, match="`model_name_or_path` must be a str or a path, got int"):
        BGEM3FlagModel(3)
    # A directory without the model's files names the file it lacks and where it looked.
    with pytest.raises(FileNotFoundError, match=f"pytorch_model.bin not found in model directory {tmp_path}"):
        BGEM3FlagModel(str(tmp_path))
    # A Hub id missing from the cache, offline: the repository, the cache and what to do.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"HF_HUB_OFFLINE is set and the Hugging Face cache .*hub lacks every file of someone/missing"):
        BGEM3FlagModel("someone/missing", cache_dir=str(tmp_path / "hub"))


def test_int8_on_a_gpu_is_refused_before_a_download(tmp_path, monkeypatch):
    # Offline, with an empty cache: were the Hub asked first, the error would be the cache's.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="invalid `dtype`: int8 runs on the CPU only"):
        BGEM3FlagModel("BAAI/bge-m3", dtype="int8", devices="cuda", cache_dir=str(tmp_path / "hub"))


def test_a_rust_panic_becomes_a_runtime_error():
    with pytest.raises(RuntimeError, match="internal error in bge_m3 \\(a Rust panic, please report it\\): boom"):
        _bge_m3._panic_for_tests("boom")
