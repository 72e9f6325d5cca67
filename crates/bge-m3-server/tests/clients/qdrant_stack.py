"""qdrant-client in its local mode (no Qdrant server) over vectors from a live bge-m3-server:
dense, sparse and ColBERT multivectors stored as the README shows, and a hybrid query (dense
and sparse prefetch, ColBERT rerank) that finds each stored document first.

Usage: BASE_URL=http://127.0.0.1:PORT python qdrant_stack.py
"""

import os
import sys

import requests
from qdrant_client import QdrantClient, models

from checks import DOCUMENTS, check, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def main():
    try:
        # --- README: Qdrant ---
        card = requests.get(f"{BASE_URL}/models/bge-m3").json()
        client = QdrantClient(":memory:")
        client.create_collection(
            "docs",
            vectors_config={
                "dense": models.VectorParams(size=card["embedding_dims"], distance=models.Distance.COSINE),
                "colbert": models.VectorParams(
                    size=card["colbert_dims"],
                    distance=models.Distance.COSINE,
                    multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                ),
            },
            sparse_vectors_config={"sparse": models.SparseVectorParams()},
        )

        def embed(texts):
            return requests.post(f"{BASE_URL}/embeddings", json={
                "input": texts,
                "input_type": {"dense": True, "sparse": True, "colbert": True},
                "sparse_format": "indices",
            }).json()

        out = embed(DOCUMENTS)
        client.upsert("docs", points=[
            models.PointStruct(id=i, payload={"text": text}, vector={
                "dense": out["dense_vecs"][i],
                "sparse": models.SparseVector(**out["sparse_vecs"][i]),
                "colbert": out["colbert_vecs"][i],
            })
            for i, text in enumerate(DOCUMENTS)
        ])

        def search(query, limit=3):
            q = embed([query])
            return client.query_points(
                "docs",
                prefetch=[
                    models.Prefetch(query=q["dense_vecs"][0], using="dense", limit=20),
                    models.Prefetch(query=models.SparseVector(**q["sparse_vecs"][0]), using="sparse", limit=20),
                ],
                query=q["colbert_vecs"][0],
                using="colbert",
                limit=limit,
            ).points
        # --- end of the README's code ---

        check("qdrant: every point stored", client.count("docs").count == len(DOCUMENTS))
        for i, text in enumerate(DOCUMENTS):
            hits = search(text)
            check(f"qdrant hybrid: document {i} finds itself first", hits and hits[0].id == i,
                  [(h.id, h.score) for h in hits])
            # Qdrant's MAX_SIM sums the best matches over the query's rows, where BGE-M3's
            # ColBERT score averages them: a document against itself scores its row count.
            rows = len(embed([text])["colbert_vecs"][0])
            check(f"qdrant hybrid: document {i} ColBERT self-score = its {rows} rows",
                  abs(hits[0].score - rows) < 1e-3, hits[0].score)
        # Each prefetch alone finds the document too (dense; sparse for texts with shared pieces).
        q = embed([DOCUMENTS[0]])
        dense = client.query_points("docs", query=q["dense_vecs"][0], using="dense", limit=1).points
        check("qdrant dense: self first", dense[0].id == 0)
        sparse = client.query_points(
            "docs", query=models.SparseVector(**q["sparse_vecs"][0]), using="sparse", limit=len(DOCUMENTS)
        ).points
        check("qdrant sparse: the document among the matches", 0 in [p.id for p in sparse])
    except Exception:
        crashed("qdrant_stack")
    return summary("qdrant_stack")


if __name__ == "__main__":
    sys.exit(main())
