"""BGE-M3's sparse (lexical) vectors as vector stores take them, `(indices, values)` with the
token ids ascending, from a local model or from a running bge-m3-server: what the LangChain
and LlamaIndex integrations (`bge_m3.langchain`, `bge_m3.llama_index`) are built on.

    from bge_m3.sparse import SparseEncoder

    encoder = SparseEncoder(model="BAAI/bge-m3")            # a local model (path or Hub id)
    encoder = SparseEncoder(url="http://localhost:8101")    # or a bge-m3-server
    indices, values = encoder.encode(["What is BGE M3?"])
"""

import json
import os
import urllib.error
import urllib.request
from typing import Any, List, Optional, Tuple, Union

from .model import BGEM3FlagModel

__all__ = ["SparseEncoder"]

Batch = Tuple[List[List[int]], List[List[float]]]


class SparseEncoder:
    """Sparse vectors of texts, from exactly one of:

    - `model`: a `BGEM3FlagModel`, or what its constructor takes (a model directory or a Hub
      repository id), loaded with `model_kwargs`;
    - `url`: a bge-m3-server's base URL (its `POST /embeddings`, `sparse_format: "indices"`),
      with `api_key` (default: the `BGE_M3_API_KEY` environment variable) sent as a bearer
      token when the server wants one.

    `max_length` cuts each text (default 8192 tokens, BGE-M3's longest); `batch_size` is the
    texts per call (per request to the server). Both ways give the same numbers.
    """

    def __init__(
        self,
        model: Optional[Union[BGEM3FlagModel, str, "os.PathLike[str]"]] = None,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        max_length: int = 8192,
        batch_size: int = 256,
        timeout: float = 600.0,
        **model_kwargs: Any,
    ):
        if (model is None) == (url is None):
            raise ValueError("give exactly one of `model` (a local model) and `url` (a server)")
        if url is not None and model_kwargs:
            raise TypeError(f"unexpected keyword argument {next(iter(model_kwargs))!r} with `url`")
        if isinstance(model, BGEM3FlagModel):
            if model_kwargs:
                raise TypeError(
                    f"unexpected keyword argument {next(iter(model_kwargs))!r} with a loaded model"
                )
            self.model: Optional[BGEM3FlagModel] = model
        elif model is not None:
            self.model = BGEM3FlagModel(model, **model_kwargs)
        else:
            self.model = None
        self.url = None if url is None else url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("BGE_M3_API_KEY")
        self.max_length = max_length
        self.batch_size = batch_size
        self.timeout = timeout

    def encode(self, texts: List[str]) -> Batch:
        """`(indices, values)`: for each text, its token ids ascending and their weights."""
        if isinstance(texts, str):
            raise TypeError("`texts` must be a list of str, got one str")
        indices: List[List[int]] = []
        values: List[List[float]] = []
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            ids, weights = self._local(chunk) if self.model is not None else self._remote(chunk)
            indices.extend(ids)
            values.extend(weights)
        return indices, values

    def __call__(self, texts: List[str]) -> Batch:
        return self.encode(texts)

    def _local(self, texts: List[str]) -> Batch:
        assert self.model is not None
        weights = self.model.encode(
            texts,
            batch_size=self.batch_size,
            max_length=self.max_length,
            return_dense=False,
            return_sparse=True,
        )["lexical_weights"]
        indices, values = [], []
        for text_weights in weights:
            pairs = sorted((int(token_id), weight) for token_id, weight in text_weights.items())
            indices.append([token_id for token_id, _ in pairs])
            values.append([weight for _, weight in pairs])
        return indices, values

    def _remote(self, texts: List[str]) -> Batch:
        body = json.dumps({
            "input": texts,
            "input_type": {"dense": False, "sparse": True, "colbert": False},
            "sparse_format": "indices",
            "max_length": self.max_length,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            f"{self.url}/embeddings", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(
                f"{self.url}/embeddings answered {error.code}: {detail}"
            ) from None
        vectors = answer["sparse_vecs"]
        return [v["indices"] for v in vectors], [v["values"] for v in vectors]
