"""FlagEmbedding's README example for BGE-M3 runs with `bge_m3` as it is written, but for its
import line (and the GPU its first block names, which neither library has here), on the model
id 'BAAI/bge-m3' found in a Hugging Face cache offline, and gives FlagEmbedding's numbers.

Each block runs in a child process: the Hub settings (HF_HUB_CACHE, HF_HUB_OFFLINE) are read
from its environment, as a user's would be."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from cases import README_BLOCKS, hub_cache
from conftest import HERE, MODELS, assert_close, assert_same_weights, model_dir, reference

IMPORT = "from FlagEmbedding import BGEM3FlagModel"

# Run after a block, in its namespace: what the block shows, as JSON.
REPORT = textwrap.dedent("""
    import json, numpy as _np
    _out = {}
    if "similarity" in globals():
        _out["similarity"] = _np.asarray(similarity).tolist()
    if "lexical_scores" in globals():
        _out["tokens"] = [list(map(list, w.items())) for w in model.convert_id_to_token(output_1["lexical_weights"])]
        _out["lexical_scores"] = float(lexical_scores)
        _out["first_first_second"] = float(model.compute_lexical_matching_score(
            output_1["lexical_weights"][0], output_1["lexical_weights"][1]))
    elif "output_2" in globals():
        _out["scores"] = [float(model.colbert_score(output_1["colbert_vecs"][0], output_2["colbert_vecs"][i]))
                          for i in (0, 1)]
    if "sentence_pairs" in globals():
        _out["scores"] = model.compute_score(sentence_pairs, max_passage_length=128,
                                             weights_for_different_modes=[0.4, 0.2, 0.4])
    print("REPORT " + json.dumps(_out))
""")


def run_block(block: str, cache: str) -> dict:
    assert block.count(IMPORT) == 1
    code = block.replace(IMPORT, "from bge_m3 import BGEM3FlagModel").replace(
        "devices=['cuda:0']", "devices=['cpu']") + REPORT
    env = {"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE / "reference")}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=300)
    assert child.returncode == 0, child.stderr
    line = [line for line in child.stdout.splitlines() if line.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


@pytest.mark.parametrize("name", MODELS)
def test_flagembeddings_readme_example_runs_unchanged(tmp_path, name):
    cache = str(tmp_path / "hub")
    hub_cache(cache, model_dir(name))
    ref = reference(name)["readme"]
    dense = run_block(README_BLOCKS["dense"], cache)
    assert_close(dense["similarity"], ref["dense"]["similarity"], f"{name}/readme dense")
    sparse = run_block(README_BLOCKS["sparse"], cache)
    for i, (a, e) in enumerate(zip(sparse["tokens"], ref["sparse"]["tokens"])):
        assert_same_weights(dict(a), e, f"{name}/readme tokens[{i}]")
    assert_close(sparse["lexical_scores"], ref["sparse"]["lexical_scores"], f"{name}/readme lexical")
    assert_close(sparse["first_first_second"], ref["sparse"]["first_first_second"], f"{name}/readme lexical 2")
    colbert = run_block(README_BLOCKS["colbert"], cache)
    assert_close(colbert["scores"], ref["colbert"]["scores"], f"{name}/readme colbert")
    scores = run_block(README_BLOCKS["compute_score"], cache)["scores"]
    assert list(scores) == list(ref["compute_score"]["scores"])
    for key, values in scores.items():
        assert_close(values, ref["compute_score"]["scores"][key], f"{name}/readme compute_score.{key}")
