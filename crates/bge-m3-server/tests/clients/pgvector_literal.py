"""pgvector's sparsevec literal (sparse_format "sparsevec") read by pgvector's own Python
package, as PostgreSQL's text form is read back: the 0-based ids and the weights of the
server's Qdrant-style "indices" output, and the model card's sparse_dims as its dimension.

No PostgreSQL runs here (a server with the extension is not available from PyPI without
creating a system user when run as root), so the SQL of the README is not executed; this
checks the one thing that goes wrong when users paste 0-based ids: the index base.

Usage: BASE_URL=http://127.0.0.1:PORT python pgvector_literal.py
"""

import os
import struct
import sys

import requests
from pgvector import SparseVector

from checks import DOCUMENTS, check, crashed, summary

BASE_URL = os.environ["BASE_URL"].rstrip("/")


def f32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def main():
    try:
        card = requests.get(f"{BASE_URL}/models/bge-m3").json()
        # --- README: pgvector ---
        out = requests.post(f"{BASE_URL}/embeddings", json={"input": DOCUMENTS, "sparse_format": "sparsevec"}).json()
        literals = out["sparse_vecs"]   # '{id+1:weight,...}/sparse_dims', for $n::sparsevec
        # --- end of the README's code ---
        indices = requests.post(f"{BASE_URL}/embeddings", json={"input": DOCUMENTS, "sparse_format": "indices"}).json()
        for i, (literal, expected) in enumerate(zip(literals, indices["sparse_vecs"])):
            vector = SparseVector.from_text(literal)
            check(f"pgvector: document {i} has the vocabulary as its dimension",
                  vector.dimensions() == card["sparse_dims"], vector.dimensions())
            check(f"pgvector: document {i} reads back as the token ids",
                  vector.indices() == expected["indices"], (vector.indices(), expected["indices"]))
            check(f"pgvector: document {i} keeps every f32 weight",
                  [f32(v) for v in vector.values()] == [f32(v) for v in expected["values"]])
            # pgvector's own writer gives the same literal back.
            check(f"pgvector: document {i} round-trips through to_text",
                  SparseVector.from_text(vector.to_text()) == vector)
    except Exception:
        crashed("pgvector_literal")
    return summary("pgvector_literal")


if __name__ == "__main__":
    sys.exit(main())
