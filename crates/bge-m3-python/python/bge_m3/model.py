"""`BGEM3FlagModel`: FlagEmbedding's class of the same name (FlagEmbedding 1.4.2), with its
constructor, methods, defaults and return shapes, on the Rust engine of `bge_m3._bge_m3`."""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _bge_m3
from ._progress import progress_bar

__all__ = ["BGEM3FlagModel"]

# Keywords of FlagEmbedding's `encode` (and `encode_queries`, `encode_corpus`) besides the
# named ones: the query instruction, applied here, and `convert_to_numpy`, which FlagEmbedding's
# BGE-M3 ignores too (its outputs are always numpy).
_ENCODE_KEYWORDS = {"instruction", "instruction_format", "convert_to_numpy"}


class BGEM3FlagModel:
    """BGE-M3's dense, sparse (lexical) and ColBERT (multi-vector) embeddings and scores, as
    FlagEmbedding's `BGEM3FlagModel` computes them, from a Rust engine: no torch.

    `model_name_or_path` is a model directory laid out like the Hugging Face repository
    (config.json, tokenizer.json, model.safetensors or pytorch_model.bin, colbert_linear.pt,
    sparse_linear.pt), or a Hub repository id such as `"BAAI/bge-m3"`, downloaded into the
    Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_ENDPOINT` and
    `HF_HUB_OFFLINE` as huggingface_hub reads them; `cache_dir` overrides the cache).

    FlagEmbedding's keywords keep their meaning: `batch_size`, `query_max_length`,
    `passage_max_length`, `return_dense`, `return_sparse`, `return_colbert_vecs` are the
    methods' defaults; `query_instruction_for_retrieval` and `query_instruction_format` (and
    `passage_instruction_for_retrieval`, `passage_instruction_format` among `kwargs`) prefix
    the texts of `encode_queries` (and `encode_corpus`); `truncate_dim` cuts the dense and
    ColBERT vectors; `devices` picks the device (`"cpu"`; `"cuda:N"` needs a build with CUDA);
    `cache_dir` is the Hub cache. `normalize_embeddings` must be True, `pooling_method`
    `"cls"` and `colbert_dim` -1 or the model's width (the engine computes BGE-M3's heads as
    they are). `use_fp16`, `use_bf16` and `trust_remote_code` are accepted and ignored: on the
    CPU FlagEmbedding runs in float32 whatever they say, and so does this engine (`dtype`
    chooses); other `kwargs` are kept as attributes, as FlagEmbedding keeps them.

    Keywords of this package: `threads` (the model's compute threads; default one per CPU),
    `dtype` (`"f32"`, the default on the CPU, `"f16"`, `"bf16"`, `"int8"` on the CPU only),
    `max_batch_tokens` (the most tokens in one forward pass, 16384 by default),
    `show_progress_bar` (None: as FlagEmbedding, a bar for calls of at least `batch_size` texts;
    True: always; False: never).
    """

    def __init__(
        self,
        model_name_or_path: Union[str, "os.PathLike[str]"],
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: Optional[str] = None,
        query_instruction_format: str = "{}{}",
        devices: Optional[Union[str, int, List[str], List[int]]] = None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: Optional[str] = None,
        colbert_dim: int = -1,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        truncate_dim: Optional[int] = None,
        *,
        threads: Optional[int] = None,
        dtype: Optional[str] = None,
        max_batch_tokens: Optional[int] = None,
        show_progress_bar: Optional[bool] = None,
        **kwargs: Any,
    ):
        if normalize_embeddings is not True:
            raise ValueError(
                "invalid `normalize_embeddings`: only True is supported (the engine returns "
                "unit-length dense and ColBERT vectors, as BGE-M3 is used)"
            )
        if pooling_method != "cls":
            raise ValueError(
                f"invalid `pooling_method`: only 'cls' is supported (BGE-M3's), got {pooling_method!r}"
            )
        self._model = _bge_m3.Model(
            model_name_or_path,
            threads=threads,
            dtype=dtype,
            devices=_device(devices),
            max_batch_tokens=max_batch_tokens,
            cache_dir=cache_dir,
        )
        if colbert_dim not in (-1, self._model.colbert_dim):
            raise ValueError(
                f"invalid `colbert_dim`: the model's ColBERT vectors have {self._model.colbert_dim} "
                f"values (-1 means that), got {colbert_dim}"
            )
        self.model_name_or_path = model_name_or_path
        self.normalize_embeddings = normalize_embeddings
        self.use_fp16 = use_fp16
        self.use_bf16 = use_bf16
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.target_devices = [self._model.device]
        self.pooling_method = pooling_method
        self.batch_size = batch_size
        self.query_max_length = query_max_length
        self.passage_max_length = passage_max_length
        self.return_dense = return_dense
        self.return_sparse = return_sparse
        self.return_colbert_vecs = return_colbert_vecs
        self.truncate_dim = truncate_dim
        self.show_progress_bar = show_progress_bar
        self.kwargs = kwargs
        for key, value in kwargs.items():
            setattr(self, key, value)

    # --- encoding -------------------------------------------------------------------------

    def encode(
        self,
        sentences: Union[List[str], str],
        batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        return_dense: Optional[bool] = None,
        return_sparse: Optional[bool] = None,
        return_colbert_vecs: Optional[bool] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """Encodes `sentences` (a list of str, or one str) and returns a dict:

        - `dense_vecs`: float32 array `(n, 1024)` of unit vectors (1-D for one str);
        - `lexical_weights`: one dict per text from token-id strings to weights, in the order
          of the tokens' first appearance (one dict for one str);
        - `colbert_vecs`: one float32 array `(tokens - 1, 1024)` per text, a unit vector for
          each token after `<s>` (`</s>` included) (one array for one str);

        an output not asked for is `None`. The defaults come from the constructor
        (`batch_size` 256, `max_length` 512 tokens, `<s>` and `</s>` counted: longer texts are
        cut; dense only). `instruction` and `instruction_format` keywords prefix each text, as
        FlagEmbedding's do. The GIL is released while the model runs, so other Python threads
        run, and may encode at the same time (their texts share the model's forward passes).
        """
        instruction, instruction_format = _encode_keywords("encode", kwargs)
        single = isinstance(sentences, str)
        texts = [sentences] if single else sentences
        if instruction is not None:
            texts = [_instruct(instruction_format, instruction, text) for text in texts]
        batch_size = self.batch_size if batch_size is None else batch_size
        with self._progress(texts, batch_size, "Inference Embeddings") as progress:
            dense, sparse, colbert = self._model.encode(
                texts,
                batch_size=batch_size,
                max_length=self.passage_max_length if max_length is None else max_length,
                return_dense=self.return_dense if return_dense is None else return_dense,
                return_sparse=self.return_sparse if return_sparse is None else return_sparse,
                return_colbert_vecs=(
                    self.return_colbert_vecs if return_colbert_vecs is None else return_colbert_vecs
                ),
                truncate_dim=self.truncate_dim,
                progress=progress,
            )
        if single:
            dense = None if dense is None else dense[0]
            sparse = None if sparse is None else sparse[0]
            colbert = None if colbert is None else colbert[0]
        return {"dense_vecs": dense, "lexical_weights": sparse, "colbert_vecs": colbert}

    def encode_queries(
        self,
        queries: Union[List[str], str],
        batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        return_dense: Optional[bool] = None,
        return_sparse: Optional[bool] = None,
        return_colbert_vecs: Optional[bool] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """`encode` for queries: `max_length` defaults to `query_max_length`, and each query
        is prefixed with `query_instruction_for_retrieval` (through `query_instruction_format`)
        when the constructor was given one."""
        _encode_keywords("encode_queries", kwargs)
        kwargs.setdefault("instruction", self.query_instruction_for_retrieval)
        kwargs.setdefault("instruction_format", self.query_instruction_format)
        return self.encode(
            queries,
            batch_size=batch_size,
            max_length=self.query_max_length if max_length is None else max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **kwargs,
        )

    def encode_corpus(
        self,
        corpus: Union[List[str], str],
        batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        return_dense: Optional[bool] = None,
        return_sparse: Optional[bool] = None,
        return_colbert_vecs: Optional[bool] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """`encode` for passages: `max_length` defaults to `passage_max_length`, and each
        passage is prefixed with the constructor's `passage_instruction_for_retrieval` keyword
        (through `passage_instruction_format`, default `"{}{}"`) when given."""
        _encode_keywords("encode_corpus", kwargs)
        kwargs.setdefault("instruction", self.kwargs.get("passage_instruction_for_retrieval"))
        kwargs.setdefault(
            "instruction_format", self.kwargs.get("passage_instruction_format", "{}{}")
        )
        return self.encode(
            corpus,
            batch_size=batch_size,
            max_length=self.passage_max_length if max_length is None else max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            **kwargs,
        )

    # --- scores ---------------------------------------------------------------------------

    def compute_score(
        self,
        sentence_pairs: Union[List[Tuple[str, str]], Tuple[str, str]],
        batch_size: Optional[int] = None,
        max_query_length: Optional[int] = None,
        max_passage_length: Optional[int] = None,
        weights_for_different_modes: Optional[List[float]] = None,
        **kwargs: Any,
    ) -> Union[Dict[str, List[float]], Dict[str, float], List[Any]]:
        """The five scores of each `(query, passage)` pair, in a dict of lists: `colbert`,
        `sparse`, `dense`, `sparse+dense` (`(w0*dense + w1*sparse) / (w0 + w1)`) and
        `colbert+sparse+dense` (`(w0*dense + w1*sparse + w2*colbert) / (w0 + w1 + w2)`), with
        `weights_for_different_modes` `[w0, w1, w2]` (default `[1.0, 1.0, 1.0]`). One pair
        gives a dict of floats; an empty list gives `[]`, as FlagEmbedding does. Lengths
        default to `query_max_length` and `passage_max_length`. Each pair is scored on its own
        (FlagEmbedding scores a batch's passages padded together, which can change a ColBERT
        score whose best match is negative; see docs/PYTHON.md)."""
        if kwargs:
            raise TypeError(
                f"compute_score() got an unexpected keyword argument {next(iter(kwargs))!r}"
            )
        if isinstance(sentence_pairs, (list, tuple)) and len(sentence_pairs) == 0:
            return []
        one_pair = isinstance(sentence_pairs, (list, tuple)) and isinstance(sentence_pairs[0], str)
        pairs = [sentence_pairs] if one_pair else sentence_pairs
        if weights_for_different_modes is None:
            weights_for_different_modes = [1.0, 1.0, 1.0]
        batch_size = self.batch_size if batch_size is None else batch_size
        with self._progress(pairs, batch_size, "Compute Scores") as progress:
            scores = self._model.compute_score(
                pairs,
                batch_size=batch_size,
                max_query_length=(
                    self.query_max_length if max_query_length is None else max_query_length
                ),
                max_passage_length=(
                    self.passage_max_length if max_passage_length is None else max_passage_length
                ),
                weights_for_different_modes=weights_for_different_modes,
                progress=progress,
            )
        if one_pair:
            return {key: values[0] for key, values in scores.items()}
        return scores

    def compute_lexical_matching_score(
        self,
        lexical_weights_1: Union[Dict[str, float], List[Dict[str, float]]],
        lexical_weights_2: Union[Dict[str, float], List[Dict[str, float]]],
    ) -> Union[np.float32, np.ndarray]:
        """The lexical matching score of two `lexical_weights` dicts (the sum, over the tokens
        in both, of the products of their weights), or of every dict of one list with every
        dict of another (a float64 array `(len(lexical_weights_1), len(lexical_weights_2))`).
        Any other mix is a `ValueError`, as in FlagEmbedding."""
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return np.float32(_bge_m3.lexical_matching_score(lexical_weights_1, lexical_weights_2))
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            return _bge_m3.lexical_matching_scores(lexical_weights_1, lexical_weights_2)
        raise ValueError(
            "invalid `lexical_weights_1`, `lexical_weights_2`: give two dicts or two lists of "
            f"dicts, got {type(lexical_weights_1).__name__} and {type(lexical_weights_2).__name__}"
        )

    def colbert_score(self, q_reps: np.ndarray, p_reps: np.ndarray) -> np.float32:
        """The ColBERT score of a query's `colbert_vecs` `(n, dim)` and a passage's `(m, dim)`:
        the mean over the query's vectors of each one's best dot product with a passage
        vector. FlagEmbedding returns a 0-d torch tensor; this is a numpy float32 (both have
        `.item()` and `float()`)."""
        return np.float32(
            _bge_m3.colbert_score(_matrix("q_reps", q_reps), _matrix("p_reps", p_reps))
        )

    def convert_id_to_token(
        self, lexical_weights: Union[Dict[str, float], List[Dict[str, float]]]
    ) -> Union[Dict[str, float], List[Dict[str, float]]]:
        """`lexical_weights` keyed by token strings instead of ids, each id decoded on its own
        (`"▁What"` becomes `"What"`). Ids that decode to the same string share one entry,
        which keeps the place of the first and the weight of the last. A list of one dict
        gives one dict, as in FlagEmbedding."""
        items = [lexical_weights] if isinstance(lexical_weights, dict) else lexical_weights
        converted = []
        for weights in items:
            tokens = self._model.decode_ids([_token_id(key) for key in weights])
            merged: Dict[str, Any] = {}
            for token, weight in zip(tokens, weights.values()):
                merged[token] = weight
            converted.append(merged)
        return converted[0] if len(converted) == 1 else converted

    # --- this engine's own ----------------------------------------------------------------

    @property
    def threads(self) -> int:
        """Threads of the model's forward passes."""
        return self._model.threads

    @property
    def dtype(self) -> str:
        """The encoder's precision (`f32`, `f16`, `bf16`, `int8`)."""
        return self._model.dtype

    @property
    def model_path(self) -> str:
        """The model directory loaded (a snapshot of the Hub cache for a repository id)."""
        return os.fspath(self._model.path)

    def _progress(self, items: Sequence[Any], batch_size: Any, desc: str) -> "_Progress":
        show = self.show_progress_bar
        if show is None:
            show = isinstance(batch_size, int) and len(items) >= batch_size
        return _Progress(len(items), desc) if show else _Progress(0, "")

    def __repr__(self) -> str:
        return (
            f"BGEM3FlagModel({os.fspath(self.model_name_or_path)!r}, device={self._model.device!r}, "
            f"dtype={self._model.dtype!r}, threads={self._model.threads})"
        )


class _Progress:
    """A context giving the engine's `progress` callback (None for no bar) and closing the
    bar, however the call ends."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.bar = total, desc, None

    def __enter__(self):
        if not self.total:
            return None
        self.bar = progress_bar(self.total, self.desc)
        return self.bar.update

    def __exit__(self, *_):
        if self.bar is not None:
            self.bar.close()


def _encode_keywords(method: str, kwargs: Dict[str, Any]) -> Tuple[Optional[str], str]:
    unknown = set(kwargs) - _ENCODE_KEYWORDS
    if unknown:
        raise TypeError(f"{method}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    return kwargs.get("instruction"), kwargs.get("instruction_format") or "{}{}"


def _instruct(instruction_format: str, instruction: str, text: str) -> str:
    # A format written as a literal backslash-n in a config file means a newline, as in
    # FlagEmbedding.
    return instruction_format.replace("\\n", "\n").format(instruction, text)


def _device(devices: Any) -> Optional[str]:
    """FlagEmbedding's `devices` as one device name for the engine (None: a GPU if this
    build has CUDA and the machine one, else the CPU)."""
    if devices is None:
        return None
    if isinstance(devices, (list, tuple)):
        if len(devices) != 1:
            raise ValueError(
                f"invalid `devices`: this engine runs one model on one device, got {list(devices)!r}"
            )
        devices = devices[0]
    if isinstance(devices, bool) or not isinstance(devices, (str, int)):
        raise TypeError(
            f"`devices` must be a str, an int or a list of one, got {type(devices).__name__}"
        )
    return f"cuda:{devices}" if isinstance(devices, int) else devices


def _token_id(key: Any) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise ValueError(
            f"invalid `lexical_weights`: its keys are token ids (as `encode` gives them), got {key!r}"
        ) from None


def _matrix(argument: str, value: Any) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(
            f"invalid `{argument}`: a (tokens, dim) array is needed, got {array.ndim} dimensions"
        )
    return array
