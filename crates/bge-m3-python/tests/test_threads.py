"""The GIL is released while the model computes: other Python threads run, and encode at the
same time (their texts share the model's passes, each gets its own results); Ctrl-C stops a
long call. The tests wait for events (the progress callback of a chunk), not for time."""

import _thread
import queue
import signal
import threading

import numpy as np
import pytest
from cases import LONG_TEXT, SHORT_TEXTS
from conftest import assert_close, assert_same_weights, model_dir

from bge_m3 import BGEM3FlagModel

# The long text cut to 500 tokens, with passes of at most 500 tokens: one text per pass.
LENGTH = 500


@pytest.fixture(scope="module")
def small_passes():
    return BGEM3FlagModel(str(model_dir("tiny-pt")), max_batch_tokens=LENGTH, show_progress_bar=False)


@pytest.fixture
def ctrl_c_handled():
    """Python's own Ctrl-C handler for the test, as an interactive session has it. A process
    started in the background by a shell without job control (`cmd &`, as some CI runners start
    their steps) inherits SIGINT ignored; Python then installs no handler and
    `_thread.interrupt_main()` does nothing, which would fail the Ctrl-C tests for how they were
    started rather than for what the engine does."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_other_threads_run_and_encode_while_a_call_computes(small_passes):
    """Thread A encodes 8 short texts, then 40 long ones (chunks of 8: six requests of long
    texts, one long text per pass). Once A's first chunk is answered, every other chunk is
    queued and A waits in the engine. The main thread then encodes: with the GIL held by A's
    wait it could not run before A's call returned; released, its text is served in turn with
    A's chunks, and comes back while A still has passes to run."""
    model = small_passes
    texts = ["a"] * 8 + [LONG_TEXT] * 40
    first_chunk_done, a_done = threading.Event(), threading.Event()
    results = {}

    def progress(n):
        first_chunk_done.set()

    def thread_a():
        out = model._model.encode(texts, batch_size=8, max_length=LENGTH, return_dense=True,
                                  return_sparse=False, return_colbert_vecs=False, progress=progress)
        results["a"] = out[0]
        a_done.set()

    a = threading.Thread(target=thread_a)
    a.start()
    assert first_chunk_done.wait(timeout=120), "A's first chunk never finished"
    mine = model.encode(SHORT_TEXTS, max_length=LENGTH)["dense_vecs"]
    a_was_done = a_done.is_set()
    a.join()
    assert not a_was_done, "the main thread only ran once A's call had returned: the GIL was held"
    # Sharing passes changed no result.
    alone = model.encode(SHORT_TEXTS, max_length=LENGTH)["dense_vecs"]
    assert_close(mine, alone, "main thread's texts")
    assert_close(results["a"][8:], np.repeat(results["a"][8:9], 40, axis=0), "A's long texts")


def test_many_threads_at_once_each_get_their_own_results(models):
    model = models["tiny-pt"]
    expected = {i: model.encode([SHORT_TEXTS[i]] * 5, return_sparse=True, return_colbert_vecs=True)
                for i in range(len(SHORT_TEXTS))}
    start = threading.Barrier(len(SHORT_TEXTS))
    got, errors = {}, []

    def worker(i):
        try:
            start.wait()
            got[i] = model.encode([SHORT_TEXTS[i]] * 5, return_sparse=True, return_colbert_vecs=True)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(SHORT_TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, out in got.items():
        assert_close(out["dense_vecs"], expected[i]["dense_vecs"], f"thread {i} dense")
        for a, b in zip(out["lexical_weights"], expected[i]["lexical_weights"]):
            assert_same_weights(a, list(b.items()), f"thread {i} sparse")
        for a, b in zip(out["colbert_vecs"], expected[i]["colbert_vecs"]):
            assert_close(a, b, f"thread {i} colbert")


def test_ctrl_c_stops_a_long_encode_and_the_model_goes_on(small_passes, ctrl_c_handled):
    """A helper thread raises the interrupt (as Ctrl-C raises it) once the first chunk is done,
    with 200 long texts left, one per pass (seconds of work): the call ends with
    KeyboardInterrupt before them, and the queue drops them. The progress callback is
    `SimpleQueue.put`, C code that runs no Python bytecode, so that only the engine's own look
    for signals can stop the call before its end."""
    model = small_passes
    chunks = queue.SimpleQueue()
    texts = ["a"] * 4 + [LONG_TEXT] * 200

    def interrupt_after_the_first_chunk():
        chunks.get()
        _thread.interrupt_main()

    helper = threading.Thread(target=interrupt_after_the_first_chunk)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        model._model.encode(texts, batch_size=4, max_length=8192, return_dense=True,
                            return_sparse=False, return_colbert_vecs=False, progress=chunks.put)
    helper.join()
    answered = 4
    while not chunks.empty():
        answered += chunks.get()
    assert answered < len(texts), "the call ran to its end before the interrupt stopped it"
    out = model.encode(SHORT_TEXTS, max_length=LENGTH)["dense_vecs"]
    assert out.shape == (len(SHORT_TEXTS), 32)


def test_ctrl_c_stops_a_call_whose_answers_are_ready_before_they_are_awaited(
    small_passes, ctrl_c_handled
):
    """20,000 chunks of one short text: the model answers them faster than the call reads the
    answers, so no wait lasts the engine's period of 100 ms. The interrupt, raised once the first
    chunk is done, must still end the call before its end: the engine looks for signals after
    every answer too. (It did only after a quiet period of 100 ms, and the test above failed on
    a loaded machine, where the model ran ahead of a calling thread that waited for a core.)"""
    model = small_passes
    chunks = queue.SimpleQueue()
    texts = ["a"] * 20_000

    def interrupt_after_the_first_chunk():
        chunks.get()
        _thread.interrupt_main()

    helper = threading.Thread(target=interrupt_after_the_first_chunk)
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        model._model.encode(texts, batch_size=1, max_length=8, return_dense=True,
                            return_sparse=False, return_colbert_vecs=False, progress=chunks.put)
    helper.join()
    answered = 1
    while not chunks.empty():
        answered += chunks.get()
    assert answered < len(texts), "the call ran to its end before the interrupt stopped it"
    out = model.encode(SHORT_TEXTS, max_length=LENGTH)["dense_vecs"]
    assert out.shape == (len(SHORT_TEXTS), 32)
