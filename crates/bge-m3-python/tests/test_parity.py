"""Every value `bge_m3` gives equals FlagEmbedding's within 1e-5 on the fixture models:
fixtures/expected/ (the cases the Rust tests check too) and tests/reference/ (FlagEmbedding
1.4.2's defaults, one string, empty strings, `max_length` cuts, `truncate_dim`, instructions,
batched `compute_score` over pairs of different lengths, the scoring helpers)."""

import numpy as np
import pytest
from cases import BATCHED_PAIRS, EMPTY_TEXTS, LONG_TEXT, SHORT_TEXTS
from conftest import (
    MODELS, assert_close, assert_same_weights, expected, expected_colbert, model_dir, reference,
)

ALL = dict(return_dense=True, return_sparse=True, return_colbert_vecs=True)
SCORE_KEYS = ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]


def check_encoded(out, ref, what):
    """An encode() result against a reference case: each output present exactly where
    FlagEmbedding gave one, equal within the tolerance."""
    for key, ref_key in (("dense_vecs", "dense"), ("lexical_weights", "sparse"), ("colbert_vecs", "colbert")):
        assert (out[key] is None) == (ref[ref_key] is None), f"{what}: {key} presence"
    if ref["dense"] is not None:
        assert out["dense_vecs"].dtype == np.float32
        assert_close(out["dense_vecs"], ref["dense"], f"{what}.dense")
    if ref["sparse"] is not None:
        if isinstance(out["lexical_weights"], dict):
            assert_same_weights(out["lexical_weights"], ref["sparse"], f"{what}.sparse")
        else:
            assert len(out["lexical_weights"]) == len(ref["sparse"])
            for i, (a, e) in enumerate(zip(out["lexical_weights"], ref["sparse"])):
                assert_same_weights(a, e, f"{what}.sparse[{i}]")
    if ref["colbert"] is not None:
        if isinstance(out["colbert_vecs"], np.ndarray):
            assert_close(out["colbert_vecs"], ref["colbert"], f"{what}.colbert")
        else:
            assert len(out["colbert_vecs"]) == len(ref["colbert"])
            for i, (a, e) in enumerate(zip(out["colbert_vecs"], ref["colbert"])):
                assert a.dtype == np.float32
                assert_close(a, e, f"{what}.colbert[{i}]")


@pytest.mark.parametrize("name", MODELS)
def test_encode_matches_every_fixture_case(models, name):
    model = models[name]
    colbert = expected_colbert(name)
    for case in expected(name)["encode"]:
        what = f"{name}/{case['name']}"
        out = model.encode(case["texts"], batch_size=case["batch_size"], max_length=case["max_length"], **ALL)
        if case["max_length"] < 2:
            # Hugging Face does not truncate at all below the two markers; the engine keeps
            # `<s></s>` (the Rust parity test checks the same): every text is the empty one's.
            empty = model.encode([""], **ALL)
            assert_close(out["dense_vecs"], np.repeat(empty["dense_vecs"], len(case["texts"]), 0), what)
            continue
        assert out["dense_vecs"].shape == (len(case["texts"]), model._model.dense_dim)
        for i in range(len(case["texts"])):
            assert_close(out["dense_vecs"][i], case["dense"][i], f"{what}[{i}].dense")
            sparse = out["lexical_weights"][i]
            assert_same_weights(sparse, [[str(k), w] for k, w in case["sparse"][i]], f"{what}[{i}].sparse")
            assert_same_weights(model.convert_id_to_token([sparse, {}])[0], case["sparse_tokens"][i],
                                f"{what}[{i}].tokens")
            assert_close(out["colbert_vecs"][i], colbert[f"{case['name']}/{i}"], f"{what}[{i}].colbert")


@pytest.mark.parametrize("name", MODELS)
def test_compute_score_matches_every_fixture_case(models, name):
    for case in expected(name)["scores"]:
        # One call for all the pairs: each pair is scored on its own, as the reference's
        # one-pair calls.
        out = models[name].compute_score(
            case["pairs"], max_query_length=case["max_query_length"],
            max_passage_length=case["max_passage_length"], weights_for_different_modes=case["weights"])
        assert list(out) == SCORE_KEYS
        for key in SCORE_KEYS:
            assert all(isinstance(v, float) for v in out[key])
            assert_close(out[key], case[key], f"{name}/{case['name']}.{key}")


@pytest.mark.parametrize("name", MODELS)
def test_defaults_are_flagembedding_1_4_2s(models, name):
    """batch_size 256, max_length 512 (the long text is cut), dense only."""
    ref = reference(name)["cases"]["defaults"]
    assert ref["texts"] == SHORT_TEXTS + [LONG_TEXT]
    out = models[name].encode(ref["texts"])
    check_encoded(out, ref, f"{name}/defaults")


@pytest.mark.parametrize("name", MODELS)
def test_one_string_gives_one_of_each(models, name):
    ref = reference(name)["cases"]["single_string"]
    out = models[name].encode(ref["text"], **ALL)
    assert out["dense_vecs"].ndim == 1 and isinstance(out["lexical_weights"], dict)
    assert out["colbert_vecs"].ndim == 2
    check_encoded(out, ref, f"{name}/single_string")


@pytest.mark.parametrize("name", MODELS)
def test_empty_strings(models, name):
    ref = reference(name)["cases"]["empty_strings"]
    assert ref["texts"] == EMPTY_TEXTS
    out = models[name].encode(EMPTY_TEXTS, **ALL)
    assert out["lexical_weights"][0] == {} and out["colbert_vecs"][0].shape[0] == 1
    check_encoded(out, ref, f"{name}/empty_strings")


@pytest.mark.parametrize("name", MODELS)
def test_max_length_cuts(models, name):
    for ref in reference(name)["cases"]["max_length"]:
        out = models[name].encode(ref["texts"], max_length=ref["max_length"], **ALL)
        assert max(len(c) for c in out["colbert_vecs"]) <= ref["max_length"] - 1
        check_encoded(out, ref, f"{name}/max_length_{ref['max_length']}")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch_size", [3, 1, 256])
def test_batch_size_changes_no_result(models, name, batch_size):
    ref = reference(name)["cases"]["batch_size_3"]
    out = models[name].encode(ref["texts"], batch_size=batch_size, max_length=8192, **ALL)
    check_encoded(out, ref, f"{name}/batch_size_{batch_size}")


@pytest.mark.parametrize("name", MODELS)
def test_truncate_dim_and_instructions(name):
    from bge_m3 import BGEM3FlagModel

    cases = reference(name)["cases"]
    model = BGEM3FlagModel(str(model_dir(name)), truncate_dim=cases["truncate_dim"]["truncate_dim"],
                           query_instruction_for_retrieval=cases["encode_queries"]["instruction"],
                           query_instruction_format=cases["encode_queries"]["format"])
    out = model.encode(SHORT_TEXTS, **ALL)
    assert out["dense_vecs"].shape == (len(SHORT_TEXTS), cases["truncate_dim"]["truncate_dim"])
    check_encoded(out, cases["truncate_dim"], f"{name}/truncate_dim")
    check_encoded(model.encode_queries(SHORT_TEXTS, return_sparse=True), cases["encode_queries"],
                  f"{name}/encode_queries")
    check_encoded(model.encode_corpus(SHORT_TEXTS), cases["encode_corpus"], f"{name}/encode_corpus")


@pytest.mark.parametrize("name", MODELS)
def test_convert_id_to_token(models, name):
    ref = reference(name)["cases"]["convert_id_to_token"]
    weights = [dict(w) for w in ref["lexical_weights"]]
    tokens = models[name].convert_id_to_token(weights)
    assert len(tokens) == len(ref["tokens"])
    for i, (a, e) in enumerate(zip(tokens, ref["tokens"])):
        assert_same_weights(a, e, f"{name}/tokens[{i}]")
    # One dict, or a list of one, gives one dict.
    assert_same_weights(models[name].convert_id_to_token(weights[0]), ref["one_dict"], f"{name}/one")
    assert_same_weights(models[name].convert_id_to_token(weights[:1]), ref["one_dict"], f"{name}/list")


@pytest.mark.parametrize("name", MODELS)
def test_lexical_matching_scores(models, name):
    ref = reference(name)["cases"]["lexical_matching"]
    weights = [dict(w) for w in ref["lexical_weights"]]
    model = models[name]
    matrix = model.compute_lexical_matching_score(weights, weights)
    assert matrix.shape == (len(weights), len(weights)) and matrix.dtype == np.float64
    assert_close(matrix, ref["matrix"], f"{name}/lexical matrix")
    one = model.compute_lexical_matching_score(weights[0], weights[1])
    assert isinstance(one, np.float32)
    assert_close(one, ref["first_second"], f"{name}/lexical one")
    # Keyed by tokens (convert_id_to_token's output) they compare the same way.
    tokens = model.convert_id_to_token(weights)
    by_token = model.compute_lexical_matching_score(tokens, tokens)
    for i, row in enumerate(by_token):
        assert_close(row[i], model.compute_lexical_matching_score(tokens[i], tokens[i]), f"{name}/by token")


@pytest.mark.parametrize("name", MODELS)
def test_colbert_scores(models, name):
    ref = reference(name)["cases"]["colbert_score"]
    model = models[name]
    colbert = model.encode(SHORT_TEXTS + [LONG_TEXT], return_dense=False, return_colbert_vecs=True)["colbert_vecs"]
    scores = [model.colbert_score(colbert[i], colbert[j]) for i, j in ref["pairs"]]
    assert all(isinstance(s, np.float32) for s in scores)
    assert_close(scores, ref["scores"], f"{name}/colbert_score")


@pytest.mark.parametrize("name", MODELS)
def test_compute_score_on_pairs_of_different_lengths(models, name):
    """FlagEmbedding pads a batch's pairs together; on these pairs its scores equal the
    engine's pair-by-pair ones."""
    cases = reference(name)["cases"]
    model = models[name]
    ref = cases["compute_score_defaults"]
    assert ref["pairs"] == BATCHED_PAIRS
    out = model.compute_score(BATCHED_PAIRS)
    for key in SCORE_KEYS:
        assert_close(out[key], ref["scores"][key], f"{name}/defaults.{key}")
    ref = cases["compute_score_settings"]
    out = model.compute_score(BATCHED_PAIRS, batch_size=ref["batch_size"], max_query_length=ref["max_query_length"],
                              max_passage_length=ref["max_passage_length"],
                              weights_for_different_modes=ref["weights"])
    for key in SCORE_KEYS:
        assert_close(out[key], ref["scores"][key], f"{name}/settings.{key}")


@pytest.mark.parametrize("name", MODELS)
def test_compute_score_of_one_pair_and_of_none(models, name):
    cases = reference(name)["cases"]
    one = models[name].compute_score(tuple(cases["compute_score_one_pair"]["pair"]))
    assert list(one) == SCORE_KEYS and all(isinstance(v, float) for v in one.values())
    for key in SCORE_KEYS:
        assert_close(one[key], cases["compute_score_one_pair"]["scores"][key], f"{name}/one pair.{key}")
    assert models[name].compute_score([]) == cases["compute_score_empty"]["scores"] == []


def test_an_empty_list_gives_empty_outputs(models):
    """FlagEmbedding fails on `[]` (an IndexError); the engine gives empty outputs."""
    out = models["tiny-pt"].encode([], **ALL)
    assert out["dense_vecs"].shape == (0, models["tiny-pt"]._model.dense_dim)
    assert out["lexical_weights"] == [] and out["colbert_vecs"] == []


def test_int8_is_close_to_f32_and_says_so(models):
    """`dtype="int8"`: the encoder's products in 8-bit integers, its outputs near f32's (the
    measured bounds on a trained model are in the README; tiny random weights are only a
    smoke check) and never f32's exactly."""
    from bge_m3 import BGEM3FlagModel
    int8 = BGEM3FlagModel(str(model_dir("tiny-pt")), dtype="int8")
    assert int8.dtype == "int8" and models["tiny-pt"].dtype == "f32"
    out = int8.encode(SHORT_TEXTS, **ALL)
    ref = models["tiny-pt"].encode(SHORT_TEXTS, **ALL)
    cosines = np.sum(out["dense_vecs"] * ref["dense_vecs"], axis=1)
    assert cosines.min() > 0.99 and cosines.max() < 1.0 - 1e-7, cosines
    assert len(out["lexical_weights"]) == len(ref["lexical_weights"])
    for a, b in zip(out["lexical_weights"], ref["lexical_weights"]):
        for token in set(a) | set(b):
            assert abs(a.get(token, 0.0) - b.get(token, 0.0)) < 0.05, (token, a, b)
    for a, b in zip(out["colbert_vecs"], ref["colbert_vecs"]):
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.sum(a * b, axis=1).min() > 0.98
