"""The Jina and text-embeddings-inference rerank wrappers of LangChain, LlamaIndex and Haystack
against a live bge-m3-server, each as docs/INTEGRATIONS.md shows: every document used as the
query ranks first, every score is /score's colbert+sparse+dense of its pair, and a wrapper left
at Jina's default model shows the server's message (from `detail`) rather than
`KeyError: 'detail'`. Against a second server with an API key (KEYED_URL, API_KEY), each sends
the key its documented way; LlamaIndex's TEI rerank sends `auth_token` as it is, so it needs
"Bearer KEY" where its TEI embeddings take the bare key. (Haystack's HuggingFaceTEIRanker is in
haystack_stack.py; LangChain has no text-embeddings-inference reranker.)

Usage: BASE_URL=http://127.0.0.1:PORT KEYED_URL=http://127.0.0.1:PORT2 API_KEY=KEY python rerank_wrappers.py
"""

import os
import sys

os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

import requests  # noqa: E402
import langchain_community.document_compressors.jina_rerank as langchain_jina  # noqa: E402
from haystack import Document as HaystackDocument  # noqa: E402
from haystack.utils import Secret  # noqa: E402
from haystack_integrations.components.rankers.jina import JinaRanker  # noqa: E402
from langchain_community.document_compressors import JinaRerank as LangChainJinaRerank  # noqa: E402
from langchain_core.documents import Document as LangChainDocument  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference  # noqa: E402
from llama_index.postprocessor.jinaai_rerank import JinaRerank as LlamaIndexJinaRerank  # noqa: E402
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference as TEIRerank  # noqa: E402

from checks import DOCUMENTS, check, crashed, summary  # noqa: E402

BASE_URL = os.environ["BASE_URL"].rstrip("/")
KEYED_URL = os.environ["KEYED_URL"].rstrip("/")
API_KEY = os.environ["API_KEY"]
JINA_DEFAULT = "jina-reranker-v1-base-en"


def fused(query, documents):
    return requests.post(f"{BASE_URL}/score", json={
        "sentences_1": [query] * len(documents), "sentences_2": documents,
    }).json()["colbert+sparse+dense"]


def judge(name, rerank):
    """`rerank(query)` gives [(document, score)], best first."""
    for i, text in enumerate(DOCUMENTS):
        ranked = rerank(text)
        check(f"{name}: document {i} ranks first", ranked and ranked[0][0] == text,
              [(d[:20], s) for d, s in ranked])
        scores = fused(text, [d for d, _ in ranked])
        check(f"{name}: query {i}'s scores are /score's",
              all(abs(s - f) <= 1e-5 for (_, s), f in zip(ranked, scores)), [(s, f) for (_, s), f in zip(ranked, scores)])


def shows_the_servers_message(name, call):
    """Jina's default model is a 404 the user reads: the server's message, naming the model."""
    try:
        call()
        check(f"{name}: Jina's default model refused", False)
    except RuntimeError as e:
        check(f"{name}: Jina's default model refused with the server's message",
              f"The model `{JINA_DEFAULT}` does not exist" in str(e), repr(e))


def langchain_jina_checks():
    # --- README: LangChain JinaRerank ---
    langchain_jina.JINA_API_URL = f"{BASE_URL}/v1/rerank"   # JinaRerank has no URL setting
    reranker = LangChainJinaRerank(model="bge-m3", jina_api_key="unused", top_n=3)
    # --- end of the README's code ---
    documents = [LangChainDocument(page_content=text) for text in DOCUMENTS]
    judge("LangChain JinaRerank", lambda query: [
        (d.page_content, d.metadata["relevance_score"]) for d in reranker.compress_documents(documents, query)])
    shows_the_servers_message("LangChain JinaRerank", lambda: LangChainJinaRerank(
        jina_api_key="unused").compress_documents(documents, "q"))
    langchain_jina.JINA_API_URL = f"{KEYED_URL}/v1/rerank"
    keyed = LangChainJinaRerank(model="bge-m3", jina_api_key=API_KEY, top_n=1)
    check("LangChain JinaRerank: the API key as jina_api_key",
          keyed.compress_documents(documents, DOCUMENTS[3])[0].page_content == DOCUMENTS[3])


def llamaindex_jina_checks():
    # --- README: LlamaIndex JinaRerank ---
    reranker = LlamaIndexJinaRerank(model="bge-m3", base_url=f"{BASE_URL}/v1", api_key="unused", top_n=3)
    # --- end of the README's code ---
    nodes = [NodeWithScore(node=TextNode(text=text)) for text in DOCUMENTS]
    judge("LlamaIndex JinaRerank", lambda query: [
        (n.node.text, n.score) for n in reranker.postprocess_nodes(nodes, query_str=query)])
    shows_the_servers_message("LlamaIndex JinaRerank", lambda: LlamaIndexJinaRerank(
        base_url=f"{BASE_URL}/v1").postprocess_nodes(nodes, query_str="q"))
    keyed = LlamaIndexJinaRerank(model="bge-m3", base_url=f"{KEYED_URL}/v1", api_key=API_KEY, top_n=1)
    check("LlamaIndex JinaRerank: the API key as api_key",
          keyed.postprocess_nodes(nodes, query_str=DOCUMENTS[3])[0].node.text == DOCUMENTS[3])


def haystack_jina_checks():
    # --- README: Haystack JinaRanker ---
    ranker = JinaRanker(model="bge-m3", api_key=Secret.from_token("unused"), base_url=f"{BASE_URL}/v1/rerank")
    # --- end of the README's code ---
    documents = [HaystackDocument(content=text) for text in DOCUMENTS]
    judge("Haystack JinaRanker", lambda query: [
        (d.content, d.score) for d in ranker.run(query=query, documents=documents)["documents"]])
    shows_the_servers_message("Haystack JinaRanker", lambda: JinaRanker(
        api_key=Secret.from_token("unused"), base_url=f"{BASE_URL}/v1/rerank").run(query="q", documents=documents))
    keyed = JinaRanker(model="bge-m3", api_key=Secret.from_token(API_KEY), base_url=f"{KEYED_URL}/v1/rerank")
    check("Haystack JinaRanker: the API key as api_key",
          keyed.run(query=DOCUMENTS[3], documents=documents)["documents"][0].content == DOCUMENTS[3])


def llamaindex_tei_checks():
    # --- README: LlamaIndex TEI rerank ---
    reranker = TEIRerank(base_url=BASE_URL, top_n=3)
    # --- end of the README's code ---
    def rerank(query):
        nodes = [NodeWithScore(node=TextNode(text=text)) for text in DOCUMENTS]
        return [(n.node.text, n.score) for n in reranker.postprocess_nodes(nodes, query_str=query)]
    judge("LlamaIndex TEI rerank", rerank)

    # With an API key: the rerank sends `auth_token` as it is, the embeddings add "Bearer ".
    nodes = [NodeWithScore(node=TextNode(text=text)) for text in DOCUMENTS]
    keyed = TEIRerank(base_url=KEYED_URL, top_n=1, auth_token=f"Bearer {API_KEY}")
    check("LlamaIndex TEI rerank: auth_token=\"Bearer KEY\"",
          keyed.postprocess_nodes(nodes, query_str=DOCUMENTS[3])[0].node.text == DOCUMENTS[3])
    bare = TEIRerank(base_url=KEYED_URL, top_n=1, auth_token=API_KEY)
    try:
        bare.postprocess_nodes(nodes, query_str=DOCUMENTS[3])
        check("LlamaIndex TEI rerank: the bare key is refused", False)
    except Exception as e:  # the library reads the 401's body as scores
        check("LlamaIndex TEI rerank: the bare key is refused", True, repr(e))
    embeddings = TextEmbeddingsInference(model_name="bge-m3", base_url=KEYED_URL, auth_token=API_KEY)
    check("LlamaIndex TEI embeddings: auth_token=KEY",
          len(embeddings.get_text_embedding(DOCUMENTS[0])) > 0)


def main():
    for group in (langchain_jina_checks, llamaindex_jina_checks, haystack_jina_checks, llamaindex_tei_checks):
        try:
            group()
        except Exception:
            crashed(group.__name__)
    return summary("rerank_wrappers")


if __name__ == "__main__":
    sys.exit(main())
