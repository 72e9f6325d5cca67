"""LangChain's OpenAIEmbeddings (langchain-openai) against a live bge-m3-server, with the one
setting the README documents, and its default refused with a message naming that setting.

Usage: BASE_URL=http://127.0.0.1:PORT python langchain_client.py
"""

import os
import sys

import openai
import requests
from langchain_openai import OpenAIEmbeddings

from checks import DOCUMENTS, best, check, close, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def main():
    try:
        # --- README: LangChain ---
        embeddings = OpenAIEmbeddings(
            model="bge-m3",
            base_url=f"{BASE_URL}/v1",
            api_key="unused",
            check_embedding_ctx_length=False,
        )
        vectors = embeddings.embed_documents(DOCUMENTS)
        query = embeddings.embed_query(DOCUMENTS[1])
        # --- end of the README's code ---

        check("langchain: one vector per document", len(vectors) == len(DOCUMENTS))
        served = requests.post(f"{BASE_URL}/v1/embeddings", json={"input": DOCUMENTS}).json()
        check("langchain: the server's dense vectors",
              all(close(v, d["embedding"]) for v, d in zip(vectors, served["data"])))
        for i, text in enumerate(DOCUMENTS):
            check(f"langchain: document {i} finds itself first",
                  best(embeddings.embed_query(text), vectors) == i)
        check("langchain: embed_query is embed_documents' vector", close(query, vectors[1]))

        # What LangChain's default (check_embedding_ctx_length=True) sends: OpenAI's tiktoken
        # ids (here "Hello world" in cl100k_base; computing them needs tiktoken's download).
        client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0)
        try:
            client.embeddings.create(model="bge-m3", input=[[9906, 1917]])
            check("langchain default: tiktoken ids refused", False)
        except openai.BadRequestError as e:
            check("langchain default: tiktoken ids refused, naming the setting",
                  e.code == "token_ids_not_allowed" and "check_embedding_ctx_length=False" in str(e), e)
    except Exception:
        crashed("langchain_client")
    return summary("langchain_client")


if __name__ == "__main__":
    sys.exit(main())
