"""pymilvus with Milvus Lite (a local file, no Milvus server) over vectors from a live
bge-m3-server: dense and sparse stored as the README shows, and a hybrid search (dense and
sparse requests fused by a ranker) that finds each stored document first.

Usage: BASE_URL=http://127.0.0.1:PORT MILVUS_DB=/path/milvus.db python milvus_stack.py
"""

import os
import sys

import requests
from pymilvus import AnnSearchRequest, DataType, MilvusClient, RRFRanker

from checks import DOCUMENTS, check, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")
MILVUS_DB = os.environ["MILVUS_DB"]


def main():
    try:
        # --- README: Milvus ---
        card = requests.get(f"{BASE_URL}/models/bge-m3").json()
        client = MilvusClient(MILVUS_DB)
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("text", DataType.VARCHAR, max_length=1000)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=card["embedding_dims"])
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = client.prepare_index_params()
        index.add_index("dense", index_type="FLAT", metric_type="IP")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        if client.has_collection("docs"):
            client.drop_collection("docs")
        client.create_collection("docs", schema=schema, index_params=index)

        def embed(texts):
            return requests.post(f"{BASE_URL}/embeddings", json={"input": texts, "sparse_format": "id"}).json()

        out = embed(DOCUMENTS)
        client.insert("docs", [
            {"id": i, "text": text, "dense": out["dense_vecs"][i], "sparse": out["sparse_vecs"][i]}
            for i, text in enumerate(DOCUMENTS)
        ])

        def search(query, limit=3):
            q = embed([query])
            return client.hybrid_search(
                "docs",
                [
                    AnnSearchRequest(data=[q["dense_vecs"][0]], anns_field="dense", param={"metric_type": "IP"}, limit=20),
                    AnnSearchRequest(data=[q["sparse_vecs"][0]], anns_field="sparse", param={"metric_type": "IP"}, limit=20),
                ],
                ranker=RRFRanker(),
                limit=limit,
                output_fields=["text"],
            )[0]
        # --- end of the README's code ---

        stored = client.query("docs", filter="id >= 0", output_fields=["sparse"])
        first = next(r for r in stored if r["id"] == 0)
        expected = {int(k): v for k, v in out["sparse_vecs"][0].items()}
        check("milvus: the sparse vector stored as sent",
              set(first["sparse"]) == set(expected)
              and all(abs(first["sparse"][k] - expected[k]) < 1e-6 for k in expected), first["sparse"])
        for i, text in enumerate(DOCUMENTS):
            hits = search(text)
            check(f"milvus hybrid: document {i} finds itself first", hits and hits[0]["id"] == i,
                  [(h["id"], h["distance"]) for h in hits])
        client.close()
    except Exception:
        crashed("milvus_stack")
    return summary("milvus_stack")


if __name__ == "__main__":
    sys.exit(main())
