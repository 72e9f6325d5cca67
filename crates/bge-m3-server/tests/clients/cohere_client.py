"""The official cohere SDK's rerank against a live bge-m3-server: ClientV2 (/v2/rerank) and
Client (/v1/rerank), as the README shows; each document used as the query ranks first, and
every relevance score is /score's colbert+sparse+dense of its pair.

Usage: BASE_URL=http://127.0.0.1:PORT python cohere_client.py
"""

import os
import sys

import cohere
import requests

from checks import DOCUMENTS, check, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def main():
    try:
        # --- README: Cohere SDK ---
        co = cohere.ClientV2(base_url=BASE_URL, api_key="unused")
        response = co.rerank(model="bge-m3", query="What is BGE M3?", documents=DOCUMENTS, top_n=3)
        # --- end of the README's code ---
        check("cohere v2: top_n results", len(response.results) == 3)
        for i, text in enumerate(DOCUMENTS):
            ranked = co.rerank(model="bge-m3", query=text, documents=DOCUMENTS).results
            check(f"cohere v2: document {i} finds itself first", ranked[0].index == i,
                  [(r.index, r.relevance_score) for r in ranked])
            scores = requests.post(f"{BASE_URL}/score", json={
                "sentences_1": [text] * len(DOCUMENTS), "sentences_2": DOCUMENTS,
            }).json()["colbert+sparse+dense"]
            check(f"cohere v2: query {i}'s scores are /score's",
                  all(abs(r.relevance_score - scores[r.index]) <= 1e-5 for r in ranked))
            check(f"cohere v2: query {i} best first",
                  all(a.relevance_score >= b.relevance_score for a, b in zip(ranked, ranked[1:])))

        v1 = cohere.Client(base_url=BASE_URL, api_key="unused")
        ranked = v1.rerank(model="bge-m3", query=DOCUMENTS[2], documents=DOCUMENTS, return_documents=True)
        check("cohere v1: self first, with its document",
              ranked.results[0].index == 2 and ranked.results[0].document.text == DOCUMENTS[2])
        try:
            co.rerank(model="bge-m3", query="q", documents=[])
            check("cohere v2: empty documents raise", False)
        except cohere.errors.BadRequestError as e:
            check("cohere v2: empty documents are a 400 naming the field",
                  e.body["error"]["param"] == "documents", e.body)
    except Exception:
        crashed("cohere_client")
    return summary("cohere_client")


if __name__ == "__main__":
    sys.exit(main())
