"""huggingface_hub's InferenceClient (what Haystack's HuggingFaceAPITextEmbedder and
HuggingFaceAPIDocumentEmbedder call in text-embeddings-inference mode) against a live
bge-m3-server, as docs/INTEGRATIONS.md shows: it posts to the URL it is given, and the server's
root URL embeds (POST / is /embed, as in text-embeddings-inference), as does /embed's URL. Sent
with Haystack's defaults (truncate=True, normalize=False); each stored document used as the
query finds itself first. Under HF_HUB_OFFLINE=1 it refuses even a local URL (the note users
need).

Usage: BASE_URL=http://127.0.0.1:PORT python huggingface_hub_client.py
"""

import os
import subprocess
import sys

import requests
from huggingface_hub import InferenceClient

from checks import DOCUMENTS, best, check, close, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def main():
    try:
        served = requests.post(f"{BASE_URL}/embed", json={"inputs": DOCUMENTS}).json()
        # --- README: huggingface_hub / Haystack (text-embeddings-inference) ---
        client = InferenceClient(model=BASE_URL)   # POST /, or f"{BASE_URL}/embed"
        vector = client.feature_extraction(DOCUMENTS[0], truncate=True, normalize=False)
        # --- end of the README's code ---
        check("InferenceClient: one vector of the model's width",
              vector.shape == (1, len(served[0])), vector.shape)
        check("InferenceClient: the server's dense vector", close(vector[0].tolist(), served[0]))
        stored = [client.feature_extraction(text)[0].tolist() for text in DOCUMENTS]
        for i, text in enumerate(DOCUMENTS):
            query = client.feature_extraction(text, truncate=True, normalize=False)[0].tolist()
            check(f"InferenceClient: document {i} finds itself first", best(query, stored) == i)
        at_embed = InferenceClient(model=f"{BASE_URL}/embed").feature_extraction(DOCUMENTS[0])
        check("InferenceClient: /embed's URL gives the same vector", close(at_embed[0].tolist(), served[0]))
        # huggingface_hub reads HF_HUB_OFFLINE when imported, hence a process of its own.
        offline = subprocess.run(
            [sys.executable, "-c", "import sys; from huggingface_hub import InferenceClient; "
             "InferenceClient(model=sys.argv[1]).feature_extraction('a')", BASE_URL],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        check("InferenceClient: HF_HUB_OFFLINE=1 refuses even a local URL",
              offline.returncode != 0 and "OfflineModeIsEnabled" in offline.stderr, offline.stderr[-300:])
    except Exception:
        crashed("huggingface_hub_client")
    return summary("huggingface_hub_client")


if __name__ == "__main__":
    sys.exit(main())
