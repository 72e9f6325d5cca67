"""LangChain: BGE-M3's sparse vectors as a `langchain_qdrant.SparseEmbeddings`, for
`QdrantVectorStore` in `RetrievalMode.HYBRID` (or `SPARSE`), from a local model or a
bge-m3-server; and its dense vectors as a LangChain `Embeddings`. Needs the extra
`bge_m3[langchain]` (langchain-qdrant).

    from langchain_qdrant import QdrantVectorStore, RetrievalMode
    from bge_m3 import BGEM3FlagModel
    from bge_m3.langchain import BGEM3Embeddings, BGEM3SparseEmbeddings

    model = BGEM3FlagModel("BAAI/bge-m3")
    store = QdrantVectorStore.from_texts(
        texts, embedding=BGEM3Embeddings(model), sparse_embedding=BGEM3SparseEmbeddings(model),
        retrieval_mode=RetrievalMode.HYBRID, location=":memory:", collection_name="docs")
"""

from typing import Any, List

from langchain_core.embeddings import Embeddings
from langchain_qdrant import SparseEmbeddings, SparseVector

from .model import BGEM3FlagModel
from .sparse import SparseEncoder

__all__ = ["BGEM3Embeddings", "BGEM3SparseEmbeddings"]


class BGEM3SparseEmbeddings(SparseEmbeddings):
    """`SparseEmbeddings` of BGE-M3's lexical weights: `BGEM3SparseEmbeddings(model)` with a
    `BGEM3FlagModel`, a model directory or a Hub id, or `BGEM3SparseEmbeddings(url=...)` with a
    bge-m3-server's URL; the keywords are `bge_m3.sparse.SparseEncoder`'s."""

    def __init__(self, model: Any = None, **kwargs: Any):
        self.encoder = SparseEncoder(model, **kwargs)

    def embed_documents(self, texts: List[str]) -> List[SparseVector]:
        indices, values = self.encoder.encode(texts)
        return [SparseVector(indices=i, values=v) for i, v in zip(indices, values)]

    def embed_query(self, text: str) -> SparseVector:
        return self.embed_documents([text])[0]


class BGEM3Embeddings(Embeddings):
    """LangChain `Embeddings` of BGE-M3's dense vectors from a local `BGEM3FlagModel` (or what
    its constructor takes, with `model_kwargs`), texts cut at `max_length` tokens (8192)."""

    def __init__(self, model: Any, *, max_length: int = 8192, **model_kwargs: Any):
        self.model = model if isinstance(model, BGEM3FlagModel) else BGEM3FlagModel(model, **model_kwargs)
        self.max_length = max_length

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        dense = self.model.encode(list(texts), max_length=self.max_length)["dense_vecs"]
        return dense.tolist()

    def embed_query(self, text: str) -> List[float]:
        return self.embed_documents([text])[0]
