"""LlamaIndex's OpenAILikeEmbedding (through /v1/embeddings) and TextEmbeddingsInference
(through text-embeddings-inference's /embed) against a live bge-m3-server, each as
docs/INTEGRATIONS.md shows, in a VectorStoreIndex whose retriever finds each stored document
first; and HuggingFaceInferenceAPIEmbedding (huggingface_hub's client, at the server's root
URL), which works through its async API only: its sync calls fail from the second one on
(`Event loop is closed`, a bug of llama-index-embeddings-huggingface-api 0.6.0 the docs name).

Usage: BASE_URL=http://127.0.0.1:PORT python llamaindex_client.py
"""

import asyncio
import os
import sys

import requests
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.embeddings.huggingface_api import HuggingFaceInferenceAPIEmbedding
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

from checks import DOCUMENTS, check, close, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def retrieval(name, embed_model):
    nodes = [TextNode(text=text, id_=str(i)) for i, text in enumerate(DOCUMENTS)]
    index = VectorStoreIndex(nodes, embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=2)
    for i, text in enumerate(DOCUMENTS):
        hits = retriever.retrieve(text)
        check(f"{name}: document {i} finds itself first", hits and hits[0].node.node_id == str(i),
              [(h.node.node_id, h.score) for h in hits])


def main():
    served = requests.post(f"{BASE_URL}/v1/embeddings", json={"input": DOCUMENTS}).json()
    dense = [d["embedding"] for d in served["data"]]
    try:
        # --- README: LlamaIndex (OpenAI-compatible) ---
        embed_model = OpenAILikeEmbedding(model_name="bge-m3", api_base=f"{BASE_URL}/v1", api_key="unused")
        # --- end of the README's code ---
        vectors = embed_model.get_text_embedding_batch(DOCUMENTS)
        check("OpenAILikeEmbedding: the server's dense vectors",
              all(close(v, d) for v, d in zip(vectors, dense)))
        retrieval("OpenAILikeEmbedding", embed_model)
    except Exception:
        crashed("OpenAILikeEmbedding")
    try:
        # --- README: LlamaIndex (text-embeddings-inference) ---
        embed_model = TextEmbeddingsInference(model_name="bge-m3", base_url=BASE_URL)
        # --- end of the README's code ---
        vectors = embed_model.get_text_embedding_batch(DOCUMENTS)
        check("TextEmbeddingsInference: the server's dense vectors",
              all(close(v, d) for v, d in zip(vectors, dense)))
        retrieval("TextEmbeddingsInference", embed_model)
    except Exception:
        crashed("TextEmbeddingsInference")
    try:
        # --- README: LlamaIndex (huggingface_hub, async only) ---
        embed_model = HuggingFaceInferenceAPIEmbedding(model_name=BASE_URL)
        vectors = asyncio.run(embed_model.aget_text_embedding_batch(DOCUMENTS))
        # --- end of the README's code ---
        check("HuggingFaceInferenceAPIEmbedding: async, the server's dense vectors",
              all(close(v, d) for v, d in zip(vectors, dense)))
        sync_model = HuggingFaceInferenceAPIEmbedding(model_name=BASE_URL)
        check("HuggingFaceInferenceAPIEmbedding: the first sync call works",
              close(sync_model.get_text_embedding(DOCUMENTS[0]), dense[0]))
        try:
            sync_model.get_text_embedding(DOCUMENTS[1])
            check("HuggingFaceInferenceAPIEmbedding: the second sync call fails (the library bug)", False,
                  "fixed? then docs/INTEGRATIONS.md's note is out of date")
        except RuntimeError as e:
            check("HuggingFaceInferenceAPIEmbedding: the second sync call fails (the library bug)",
                  "Event loop is closed" in str(e), repr(e))
    except Exception:
        crashed("HuggingFaceInferenceAPIEmbedding")
    return summary("llamaindex_client")


if __name__ == "__main__":
    sys.exit(main())
