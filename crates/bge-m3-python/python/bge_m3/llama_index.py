"""LlamaIndex: BGE-M3's sparse vectors as the sparse encoder functions of
`llama_index.vector_stores.qdrant.QdrantVectorStore` (`enable_hybrid=True`), whose default
wants FastEmbed; from a local model or a bge-m3-server. Needs the extra
`bge_m3[llama-index]` (llama-index-vector-stores-qdrant).

    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from bge_m3.llama_index import sparse_encoder

    encode = sparse_encoder("BAAI/bge-m3")            # or sparse_encoder(url="http://...")
    store = QdrantVectorStore("docs", client=client, enable_hybrid=True,
                              sparse_doc_fn=encode, sparse_query_fn=encode)
"""

from typing import Any, Callable, List, Tuple

from .sparse import SparseEncoder

__all__ = ["sparse_encoder"]

SparseEncoderCallable = Callable[[List[str]], Tuple[List[List[int]], List[List[float]]]]


def sparse_encoder(model: Any = None, **kwargs: Any) -> SparseEncoderCallable:
    """A function from texts to `(indices, values)`, LlamaIndex's `SparseEncoderCallable`,
    for both `sparse_doc_fn` and `sparse_query_fn`: BGE-M3 encodes queries and documents
    alike. `model` is a `BGEM3FlagModel`, a model directory or a Hub id; or give `url=` for a
    bge-m3-server; the keywords are `bge_m3.sparse.SparseEncoder`'s."""
    return SparseEncoder(model, **kwargs).encode
