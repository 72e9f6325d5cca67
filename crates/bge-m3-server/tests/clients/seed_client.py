"""The original service's README examples, run against a live bge-m3-server.

Each example below is the Python code of the README of the service we replace (our users'
code), copied as it is, followed by assertions. The only change: that code hard-codes
http://localhost:8101, and run.sh starts the server on a free port, so requests is patched to
send http://localhost:8101 to BASE_URL. (The README as we have it lost its indentation; the
class is indented the only way Python accepts.)

Usage: BASE_URL=http://127.0.0.1:PORT python seed_client.py
"""

import os
import sys

import requests

from checks import check, close, crashed, norm, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")
SEED_URL = "http://localhost:8101"

_request = requests.Session.request


def _redirect(self, method, url, *args, **kwargs):
    if url.startswith(SEED_URL):
        url = BASE_URL + url[len(SEED_URL):]
    return _request(self, method, url, *args, **kwargs)


requests.Session.request = _redirect

# The model's width, from the server itself (the fixture model is not 1024 wide).
DIM = requests.get(f"{BASE_URL}/models/bge-m3").json()["embedding_dims"]


def example_v1_hello_world():
    # --- README: OpenAI-compatible /v1/embeddings ---
    import requests
    response = requests.post("http://localhost:8101/v1/embeddings", json={
    "input": "Hello world",
    "model": "bge-m3"
    })
    print(response.json())
    # --- end of README code ---
    body = response.json()
    check("v1 hello: status 200", response.status_code == 200, response.status_code)
    check("v1 hello: object list", body["object"] == "list")
    check("v1 hello: model", body["model"] == "bge-m3")
    item = body["data"][0]
    check("v1 hello: item object", item["object"] == "embedding" and item["index"] == 0)
    check("v1 hello: embedding floats", len(item["embedding"]) == DIM
          and all(isinstance(v, float) for v in item["embedding"]))
    check("v1 hello: unit length", abs(norm(item["embedding"]) - 1.0) < 1e-4)
    usage = body["usage"]
    check("v1 hello: usage", usage["prompt_tokens"] == usage["total_tokens"] >= 1, usage)
    native = requests.post(f"{BASE_URL}/embeddings", json={"input": "Hello world"}).json()
    check("v1 hello: same vector as /embeddings", close(item["embedding"], native["dense_vecs"][0]))
    check("v1 hello: same usage as /embeddings", native["usage"] == usage)


def example_v1_dense_and_sparse():
    # --- README: /v1/embeddings with dense and sparse ---
    import requests
    response = requests.post("http://localhost:8101/v1/embeddings", json={
    "input": "What is BGE M3?",
    "model": "bge-m3"
    })
    print(response.json())
    # --- end of README code ---
    body = response.json()
    check("v1 sparse: status 200", response.status_code == 200)
    item = body["data"][0]
    check("v1 sparse: dense", len(item["dense"]) == DIM and close(item["dense"], item["embedding"]))
    sparse = item["sparse"]
    check("v1 sparse: token -> weight", isinstance(sparse, dict) and len(sparse) > 0
          and all(isinstance(k, str) and isinstance(v, float) and v > 0 for k, v in sparse.items()),
          sparse)
    check("v1 sparse: usage", body["usage"]["prompt_tokens"] >= len(sparse))


def example_native():
    # --- README: native /embeddings ---
    import requests
    # 默认返回稠密 + 稀疏向量
    response = requests.post("http://localhost:8101/embeddings", json={
    "input": "Hello world"
    })
    # 批量处理
    response = requests.post("http://localhost:8101/embeddings", json={
    "input": ["文本1", "文本2", "文本3"]
    })
    # --- end of README code ---
    body = response.json()
    check("native: status 200", response.status_code == 200)
    check("native: keys", sorted(body) == ["dense_vecs", "sparse_vecs", "usage"], sorted(body))
    check("native: three dense", len(body["dense_vecs"]) == 3
          and all(len(v) == DIM for v in body["dense_vecs"]))
    check("native: three sparse", len(body["sparse_vecs"]) == 3
          and all(isinstance(s, dict) for s in body["sparse_vecs"]))
    check("native: usage", body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0)
    one = requests.post(f"{BASE_URL}/embeddings", json={"input": "文本2"}).json()
    check("native: batch item equals single", close(one["dense_vecs"][0], body["dense_vecs"][1]))

    # The documented request parameters.
    full = requests.post(f"{BASE_URL}/embeddings", json={
        "input": ["Hello world", "BGE M3"],
        "input_type": {"dense": True, "sparse": True, "colbert": True},
        "batch_size": 1,
        "max_length": 8192,
    }).json()
    check("native: colbert_vecs", len(full["colbert_vecs"]) == 2
          and all(len(row) > 0 for rows in full["colbert_vecs"] for row in rows))
    check("native: batch_size does not change vectors",
          close(full["dense_vecs"][0], requests.post(f"{BASE_URL}/embeddings", json={
              "input": "Hello world"}).json()["dense_vecs"][0]))


def example_score():
    # --- README: /score ---
    import requests
    response = requests.post("http://localhost:8101/score", json={
    "sentences_1": ["What is BGE M3?"],
    "sentences_2": ["BGE M3 is an embedding model"],
    "weights": [0.4, 0.2, 0.4]
    })
    print(response.json())
    # --- end of README code ---
    body = response.json()
    check("score: status 200", response.status_code == 200)
    keys = ["dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"]
    check("score: keys", list(body) == keys, list(body))
    check("score: one per pair", all(len(body[k]) == 1 for k in keys))
    d, s, c = body["dense"][0], body["sparse"][0], body["colbert"][0]
    check("score: sparse+dense", abs(body["sparse+dense"][0] - (0.4 * d + 0.2 * s) / 0.6) < 1e-5)
    check("score: colbert+sparse+dense",
          abs(body["colbert+sparse+dense"][0] - (0.4 * d + 0.2 * s + 0.4 * c)) < 1e-5)


def example_bge_client():
    # --- README: Python client ---
    import requests
    from typing import List, Dict

    class BGEClient:
        def __init__(self, base_url: str = "http://localhost:8101"):
            self.base_url = base_url

        def encode(self, texts: List[str], dense: bool = True, sparse: bool = True) -> Dict:
            response = requests.post(
                f"{self.base_url}/embeddings",
                json={
                    "input": texts,
                    "input_type": {
                        "dense": dense,
                        "sparse": sparse,
                        "colbert": False
                    }
                }
            )
            return response.json()

    # 使用示例
    client = BGEClient()
    result = client.encode(["Hello world", "BGE M3"])
    print(f"稠密向量维度: {len(result['dense_vecs'][0])}")
    print(f"稀疏向量: {result['sparse_vecs'][0]}")
    # --- end of README code ---
    check("BGEClient: dense width", len(result["dense_vecs"][0]) == DIM)
    check("BGEClient: two of each", len(result["dense_vecs"]) == 2 and len(result["sparse_vecs"]) == 2)
    check("BGEClient: no colbert", "colbert_vecs" not in result)
    sparse_only = client.encode(["Hello world"], dense=False)
    check("BGEClient: sparse only", sorted(sparse_only) == ["sparse_vecs", "usage"], sorted(sparse_only))
    dense_only = client.encode(["Hello world"], sparse=False)
    check("BGEClient: dense only", sorted(dense_only) == ["dense_vecs", "usage"], sorted(dense_only))


def main():
    examples = [
        example_v1_hello_world,
        example_v1_dense_and_sparse,
        example_native,
        example_score,
        example_bge_client,
    ]
    for example in examples:
        try:
            example()
        except Exception:  # an example that crashes is a failure, and the others still run
            crashed(example.__name__)
    return summary("seed_client")


if __name__ == "__main__":
    sys.exit(main())
