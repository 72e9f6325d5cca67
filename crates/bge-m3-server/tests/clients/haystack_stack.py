"""Haystack 3.x against a live bge-m3-server, with nothing but its own components, as
docs/INTEGRATIONS.md shows: huggingface-api-haystack's dense and sparse TEI embedders, given the
server's root URL, index documents into qdrant-haystack's QdrantDocumentStore in hybrid mode
(Qdrant's local mode); a query pipeline (both text embedders, QdrantHybridRetriever,
HuggingFaceTEIRanker) finds each stored document first, with /score's fused score as the
ranker's score. Against a second server with an API key (KEYED_URL, API_KEY), the three
query components send it as their `token`.

Usage: BASE_URL=http://127.0.0.1:PORT KEYED_URL=http://127.0.0.1:PORT2 API_KEY=KEY python haystack_stack.py
"""

import os
import sys

# No telemetry: Haystack would send its usage events to PostHog.
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

import requests  # noqa: E402
from haystack import Document, Pipeline  # noqa: E402
from haystack.components.writers import DocumentWriter  # noqa: E402
from haystack.utils import Secret  # noqa: E402
from haystack_integrations.components.embedders.huggingface_api import (  # noqa: E402
    HuggingFaceAPIDocumentEmbedder,
    HuggingFaceAPITextEmbedder,
    HuggingFaceTEISparseDocumentEmbedder,
    HuggingFaceTEISparseTextEmbedder,
)
from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker  # noqa: E402
from haystack_integrations.components.retrievers.qdrant import QdrantHybridRetriever  # noqa: E402
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore  # noqa: E402

from checks import DOCUMENTS, check, close, crashed, summary  # noqa: E402

BASE_URL = os.environ["BASE_URL"].rstrip("/")
KEYED_URL = os.environ["KEYED_URL"].rstrip("/")
API_KEY = os.environ["API_KEY"]


def keyed_checks(served_dense, served_sparse):
    token = Secret.from_token(API_KEY)
    dense = HuggingFaceAPITextEmbedder(api_type="text_embeddings_inference", api_params={"url": KEYED_URL},
                                       token=token).run(text=DOCUMENTS[0])["embedding"]
    check("haystack: the dense text embedder sends its token as the API key", close(dense, served_dense[0]))
    sparse = HuggingFaceTEISparseTextEmbedder(api_base_url=KEYED_URL, token=token).run(
        text=DOCUMENTS[0])["sparse_embedding"]
    check("haystack: the sparse text embedder sends its token as the API key",
          sparse.indices and sorted(sparse.indices) == [w["index"] for w in served_sparse[0]])
    ranked = HuggingFaceTEIRanker(url=KEYED_URL, token=token).run(
        query=DOCUMENTS[3], documents=[Document(content=text) for text in DOCUMENTS])["documents"]
    check("haystack: the TEI ranker sends its token as the API key", ranked[0].content == DOCUMENTS[3])


def main():
    served_dense = requests.post(f"{BASE_URL}/embed", json={"inputs": DOCUMENTS}).json()
    served_sparse = requests.post(f"{BASE_URL}/embed_sparse", json={"inputs": DOCUMENTS}).json()
    try:
        # --- README: Haystack ---
        card = requests.get(f"{BASE_URL}/models/bge-m3").json()
        store = QdrantDocumentStore(":memory:", embedding_dim=card["embedding_dims"],
                                    use_sparse_embeddings=True, similarity="cosine")

        indexing = Pipeline()
        indexing.add_component("dense", HuggingFaceAPIDocumentEmbedder(
            api_type="text_embeddings_inference", api_params={"url": BASE_URL}))
        indexing.add_component("sparse", HuggingFaceTEISparseDocumentEmbedder(api_base_url=BASE_URL))
        indexing.add_component("writer", DocumentWriter(document_store=store))
        indexing.connect("dense", "sparse")
        indexing.connect("sparse", "writer")
        indexing.run({"dense": {"documents": [Document(content=text) for text in DOCUMENTS]}})

        query = Pipeline()
        query.add_component("dense", HuggingFaceAPITextEmbedder(
            api_type="text_embeddings_inference", api_params={"url": BASE_URL}))
        query.add_component("sparse", HuggingFaceTEISparseTextEmbedder(api_base_url=BASE_URL))
        query.add_component("retriever", QdrantHybridRetriever(document_store=store, top_k=3))
        query.add_component("ranker", HuggingFaceTEIRanker(url=BASE_URL, top_k=3))
        query.connect("dense.embedding", "retriever.query_embedding")
        query.connect("sparse.sparse_embedding", "retriever.query_sparse_embedding")
        query.connect("retriever.documents", "ranker.documents")

        def search(text):
            return query.run({"dense": {"text": text}, "sparse": {"text": text}, "ranker": {"query": text}},
                             include_outputs_from={"retriever"})
        # --- end of the README's code ---

        stored = {doc.content: doc for doc in store.filter_documents()}
        check("haystack: every document stored", sorted(stored) == sorted(DOCUMENTS), sorted(stored))
        check("haystack: the stored dense vectors are /embed's",
              all(close(stored[text].embedding, served_dense[i]) for i, text in enumerate(DOCUMENTS)))

        def same_sparse(sparse, served):
            got = sorted(zip(sparse.indices, sparse.values))
            return ([index for index, _ in got] == [w["index"] for w in served]
                    and close([value for _, value in got], [w["value"] for w in served]))

        check("haystack: the stored sparse vectors are /embed_sparse's",
              all(same_sparse(stored[text].sparse_embedding, served_sparse[i]) for i, text in enumerate(DOCUMENTS)))

        for i, text in enumerate(DOCUMENTS):
            result = search(text)
            retrieved = result["retriever"]["documents"]
            ranked = result["ranker"]["documents"]
            check(f"haystack: hybrid retrieval finds document {i} first",
                  retrieved and retrieved[0].content == text, [d.content[:20] for d in retrieved])
            check(f"haystack: the TEI ranker puts document {i} first",
                  ranked and ranked[0].content == text, [(d.content[:20], d.score) for d in ranked])
            fused = requests.post(f"{BASE_URL}/score", json={
                "sentences_1": [text] * len(ranked), "sentences_2": [d.content for d in ranked],
            }).json()["colbert+sparse+dense"]
            check(f"haystack: the ranker's scores for query {i} are /score's",
                  all(abs(d.score - s) <= 1e-5 for d, s in zip(ranked, fused)),
                  [(d.score, s) for d, s in zip(ranked, fused)])
    except Exception:
        crashed("haystack_stack")
    try:
        keyed_checks(served_dense, served_sparse)
    except Exception:
        crashed("haystack_stack (API key)")
    return summary("haystack_stack")


if __name__ == "__main__":
    sys.exit(main())
