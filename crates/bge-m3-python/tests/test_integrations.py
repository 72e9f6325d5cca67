"""The extras with the real packages and Qdrant's local mode (qdrant-client's `:memory:`):
LangChain's `QdrantVectorStore` in hybrid and sparse modes with `bge_m3.langchain`, and
LlamaIndex's `QdrantVectorStore(enable_hybrid=True)` with `bge_m3.llama_index`, each backed by
the local model and by a bge-m3-server. Every stored document, used as the query, comes back
first. Skipped where the extras' packages are not installed (.ci/run installs them)."""

import os
import socket
import subprocess
import time
import urllib.request

import pytest
from conftest import ROOT, assert_close, model_dir, server_binary

DOCUMENTS = [
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Rust is a systems programming language focused on safety, speed and concurrency.",
    "北京是中华人民共和国的首都。",
    "I love pizza, pasta and ice cream.",
    "Astronomers discovered a distant galaxy whose light travelled billions of years.",
]


@pytest.fixture(scope="module")
def model(models):
    return models["tiny-pt"]


@pytest.fixture(scope="module")
def server_url():
    """A bge-m3-server on the tiny-pt fixture on a free port, stopped after the module."""
    binary = server_binary()
    if binary is None:
        pytest.skip("no bge-m3-server binary: build it (cargo build -p bge-m3-server) or set BGE_M3_SERVER")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MODEL_PATH=str(model_dir("tiny-pt")), HOST="127.0.0.1", PORT=str(port))
    log = open(ROOT / "target" / "python-tests-server.log", "w")
    server = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:  # until /health answers 200, the server exits, or 120 s
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"the server exited; see {log.name}"
            assert time.monotonic() < deadline, f"the server was not healthy after 120 s; see {log.name}"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


# --- the sparse encoder both integrations use ---------------------------------------------------


def test_the_server_and_the_local_model_give_the_same_sparse_vectors(model, server_url):
    from bge_m3.sparse import SparseEncoder

    local = SparseEncoder(model).encode(DOCUMENTS)
    remote = SparseEncoder(url=server_url, batch_size=2).encode(DOCUMENTS)
    assert local[0] == remote[0]
    for i, (a, b) in enumerate(zip(local[1], remote[1])):
        assert_close(a, b, f"values[{i}]")
    for indices, values in zip(*local):
        assert indices == sorted(set(indices)) and all(v > 0 for v in values)


def test_a_sparse_encoder_needs_one_source_and_names_a_server_error(model):
    from bge_m3.sparse import SparseEncoder

    with pytest.raises(ValueError, match="give exactly one of `model`"):
        SparseEncoder()
    with pytest.raises(ValueError, match="give exactly one of `model`"):
        SparseEncoder(model, url="http://127.0.0.1:1")
    with pytest.raises(TypeError, match="one str"):
        SparseEncoder(model).encode("one text")


def test_a_server_error_is_raised_with_its_answer(server_url):
    from bge_m3.sparse import SparseEncoder

    with pytest.raises(RuntimeError, match=r"/embeddings answered 400: .*max_length"):
        SparseEncoder(url=server_url, max_length=0).encode(["a"])


# --- LangChain -------------------------------------------------------------------------------


def langchain_store(model, sparse, mode):
    langchain_qdrant = pytest.importorskip("langchain_qdrant")
    from bge_m3.langchain import BGEM3Embeddings

    dense = BGEM3Embeddings(model) if mode != "sparse" else None
    retrieval = {"hybrid": langchain_qdrant.RetrievalMode.HYBRID,
                 "sparse": langchain_qdrant.RetrievalMode.SPARSE}[mode]
    return langchain_qdrant.QdrantVectorStore.from_texts(
        DOCUMENTS, embedding=dense, sparse_embedding=sparse, retrieval_mode=retrieval,
        location=":memory:", collection_name=f"docs-{mode}")


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_langchain_qdrant_with_the_local_model(model, mode):
    pytest.importorskip("langchain_qdrant")
    from bge_m3.langchain import BGEM3SparseEmbeddings

    store = langchain_store(model, BGEM3SparseEmbeddings(model), mode)
    for text in DOCUMENTS:
        assert store.similarity_search(text, k=1)[0].page_content == text


def test_langchain_qdrant_with_a_server(model, server_url):
    pytest.importorskip("langchain_qdrant")
    from bge_m3.langchain import BGEM3SparseEmbeddings

    sparse = BGEM3SparseEmbeddings(url=server_url)
    local = BGEM3SparseEmbeddings(model).embed_query(DOCUMENTS[0])
    remote = sparse.embed_query(DOCUMENTS[0])
    assert remote.indices == local.indices
    assert_close(remote.values, local.values, "langchain sparse values")
    store = langchain_store(model, sparse, "hybrid")
    for text in DOCUMENTS:
        assert store.similarity_search(text, k=1)[0].page_content == text


def test_langchain_dense_embeddings_are_the_models(model):
    pytest.importorskip("langchain_qdrant")
    from bge_m3.langchain import BGEM3Embeddings

    vectors = BGEM3Embeddings(model).embed_documents(DOCUMENTS)
    assert_close(vectors, model.encode(DOCUMENTS, max_length=8192)["dense_vecs"], "dense")
    assert_close(BGEM3Embeddings(model).embed_query(DOCUMENTS[1]), vectors[1], "query")


# --- LlamaIndex ------------------------------------------------------------------------------


def llama_index_hits(model, encode, mode):
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import VectorStoreQuery
    from qdrant_client import QdrantClient

    dense = model.encode(DOCUMENTS, max_length=8192)["dense_vecs"].tolist()
    store = qdrant.QdrantVectorStore("docs", client=QdrantClient(":memory:"), enable_hybrid=True,
                                     sparse_doc_fn=encode, sparse_query_fn=encode)
    store.add([TextNode(text=text, embedding=vector) for text, vector in zip(DOCUMENTS, dense)])
    hits = []
    for text, vector in zip(DOCUMENTS, dense):
        query = VectorStoreQuery(query_str=text, query_embedding=vector, similarity_top_k=1,
                                 sparse_top_k=len(DOCUMENTS), hybrid_top_k=1, mode=mode)
        hits.append(store.query(query).nodes[0].text)
    return hits


@pytest.mark.parametrize("mode", ["hybrid", "sparse"])
def test_llama_index_qdrant_with_the_local_model(model, mode):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from bge_m3.llama_index import sparse_encoder

    assert llama_index_hits(model, sparse_encoder(model), mode) == DOCUMENTS


def test_llama_index_qdrant_with_a_server(model, server_url):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from bge_m3.llama_index import sparse_encoder

    encode = sparse_encoder(url=server_url)
    assert encode(DOCUMENTS)[0] == sparse_encoder(model)(DOCUMENTS)[0]
    assert llama_index_hits(model, encode, "hybrid") == DOCUMENTS
