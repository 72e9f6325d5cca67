"""BGE-M3 (BAAI/bge-m3) with FlagEmbedding's `BGEM3FlagModel` API on a Rust engine: dense,
sparse (lexical) and ColBERT embeddings and their scores, with numpy and without torch.

    from bge_m3 import BGEM3FlagModel

    model = BGEM3FlagModel("BAAI/bge-m3")
    output = model.encode(["What is BGE M3?"], return_dense=True, return_sparse=True)

The same numbers as FlagEmbedding 1.4.2 (within 1e-5), from the engine of bge-m3-server.
Optional integrations: `bge_m3.langchain` (extra `langchain`) and `bge_m3.llama_index`
(extra `llama-index`). See docs/PYTHON.md.
"""

from importlib.metadata import PackageNotFoundError, version

from .model import BGEM3FlagModel

try:
    __version__ = version("bge-m3")
except PackageNotFoundError:  # imported from a source tree without being installed
    __version__ = "unknown"

__all__ = ["BGEM3FlagModel", "__version__"]
