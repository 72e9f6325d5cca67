"""Type stubs of the extension module `bge_m3._bge_m3` (Rust, crates/bge-m3-python/src), on
which `bge_m3.BGEM3FlagModel` is built. Errors: a bad argument is a `TypeError` or a
`ValueError` naming it; a missing model a `FileNotFoundError`; an unreadable model file or a
failed download an `OSError`; any other fault (a Rust panic included) a `RuntimeError`."""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Texts = Union[List[str], Tuple[str, ...]]
_Pairs = Union[List[Sequence[str]], Tuple[Sequence[str], ...]]

class Model:
    """BGE-M3 loaded from a model directory or a Hugging Face Hub repository id, with the
    queue that runs its forward passes on threads of its own."""

    def __init__(
        self,
        model_name_or_path: Union[str, os.PathLike[str]],
        *,
        threads: Optional[int] = None,
        dtype: Optional[str] = None,
        devices: Optional[str] = None,
        max_batch_tokens: Optional[int] = None,
        cache_dir: Optional[Union[str, os.PathLike[str]]] = None,
    ) -> None: ...
    def encode(
        self,
        sentences: _Texts,
        *,
        batch_size: int,
        max_length: int,
        return_dense: bool,
        return_sparse: bool,
        return_colbert_vecs: bool,
        truncate_dim: Optional[int] = None,
        progress: Optional[Callable[[int], object]] = None,
    ) -> Tuple[
        Optional[npt.NDArray[np.float32]],
        Optional[List[Dict[str, float]]],
        Optional[List[npt.NDArray[np.float32]]],
    ]:
        """`(dense, sparse, colbert)`: a float32 array `(n, dim)`, a dict from token-id
        strings to weights per text, a float32 array `(tokens - 1, dim)` per text; `None` for
        an output not asked for. The GIL is released while the model runs."""
    def compute_score(
        self,
        sentence_pairs: _Pairs,
        *,
        batch_size: int,
        max_query_length: int,
        max_passage_length: int,
        weights_for_different_modes: Sequence[float],
        progress: Optional[Callable[[int], object]] = None,
    ) -> Dict[str, List[float]]:
        """`colbert`, `sparse`, `dense`, `sparse+dense`, `colbert+sparse+dense`: one score per
        pair, each pair scored on its own."""
    def decode_ids(self, ids: Sequence[int]) -> List[str]:
        """Each token id decoded on its own (`▁What` is `What`)."""
    @property
    def dense_dim(self) -> int: ...
    @property
    def colbert_dim(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def path(self) -> str: ...

def lexical_matching_score(
    lexical_weights_1: Dict[str, float], lexical_weights_2: Dict[str, float]
) -> float:
    """The sum, over the keys in both dicts, of the products of their weights."""

def lexical_matching_scores(
    lexical_weights_1: List[Dict[str, float]], lexical_weights_2: List[Dict[str, float]]
) -> npt.NDArray[np.float64]:
    """`lexical_matching_score` of every pair, as an array `(len(1), len(2))`."""

def colbert_score(q_reps: npt.NDArray[np.float32], p_reps: npt.NDArray[np.float32]) -> float:
    """The mean over the rows of `q_reps` of each one's best dot product with a row of
    `p_reps`."""

def _panic_for_tests(message: str) -> None:
    """Panics in Rust, for the tests that check a panic becomes a `RuntimeError`."""
