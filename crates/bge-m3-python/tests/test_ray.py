"""The Ray Data example (examples/ray_encode.py) against bge-m3-encode: the same records read
(positions, ids, bad records), and, on a real Ray cluster of three raylets on this machine
(a head and two worker nodes, one encoder actor each) one of which is killed while the run
goes on, every record written exactly once with bge-m3-encode's values within the tolerance.

Needs `ray[data]` (tests/requirements.txt) and the bge-m3-encode binary ($BGE_M3_ENCODE, else
the debug build); skips without them.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TOLERANCE, assert_close, model_dir

# Every Ray process of these tests listens and connects on the loopback address only (Ray
# otherwise picks the machine's own address, as a cluster of several machines needs).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
pytest.importorskip("ray")
import pyarrow.dataset  # noqa: E402  (ray[data] brings pyarrow)
import pyarrow.parquet as pq  # noqa: E402

EXAMPLE = ROOT / "crates" / "bge-m3-python" / "examples" / "ray_encode.py"
MODEL = model_dir("tiny-pt")
# --max-text-chars of every run here: the corpus's longest text has 400 characters.
MAX_TEXT_CHARS = 1000
# Generous: a bound on a hang, not a timing (the cluster starts in ~10 s, the run in ~20 s).
RUN_TIMEOUT = 300


def encoder_binary():
    path = os.environ.get("BGE_M3_ENCODE") or str(ROOT / "target" / "debug" / "bge-m3-encode")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip("no bge-m3-encode binary ($BGE_M3_ENCODE, or cargo build -p bge-m3-encode)")
    return path


def load_example():
    spec = importlib.util.spec_from_file_location("ray_encode", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BAD_LINES = [
    b"{not json\n",
    b'{"id": "no-text"}\n',
    b'{"id": "number", "text": 7}\n',
    b'{"id": 1.5, "text": "a float id"}\n',
    b'{"id": true, "text": "a boolean id"}\n',
    b'{"id": 18446744073709551616, "text": "an id past 64 bits"}\n',
    b'["not", "an", "object"]\n',
    b'{"id": "nan", "text": NaN}\n',
    b'{"id": "latin1", "text": "caf\xe9"}\n',
    b'{"id": "surrogate", "text": "\\ud800"}\n',
    b'{"id": "long", "text": "' + b"x" * (MAX_TEXT_CHARS + 1) + b'"}\n',
]


def corpus(path: Path, records: int, bad: bool) -> None:
    """`records` records of varied lengths: string ids, integer ids, none (then the position is
    the id), a repeated id; blank lines (not records) and, with `bad`, a bad record of each
    kind spread among them."""
    words = "retrieval dense sparse colbert token vector index corpus query passage".split()
    lines = []
    for i in range(records):
        text = " ".join(words[(i * 7 + k) % len(words)] for k in range(1 + (i * 13) % 12))
        record = {"text": f"{i}: {text}"}
        if i % 3 == 0:
            record["id"] = f"doc-{i}"
        elif i % 3 == 1:
            record["id"] = i * 10
        if i == 5:
            record["id"] = "doc-0"
        lines.append(json.dumps(record).encode() + b"\n")
        if i % 97 == 0:
            lines.append(b"  \r\n")
        if bad and i % 101 == 50:
            lines.append(BAD_LINES[(i // 101) % len(BAD_LINES)])
    path.write_bytes(b"".join(lines).rstrip(b"\n"))  # the last line without its newline


def reference(tmp: Path, corpus_path: Path, outputs: str) -> Path:
    """bge-m3-encode's Parquet output of the corpus (bad records skipped)."""
    out = tmp / "reference.parquet"
    subprocess.run([encoder_binary(), "--model", str(MODEL), str(corpus_path), "-o", str(out),
                    "--outputs", outputs, "--on-error", "skip", "--max-text-chars", str(MAX_TEXT_CHARS),
                    "--progress", "log"],
                   check=True, timeout=RUN_TIMEOUT, capture_output=True)
    return out


def test_records_positions_ids_and_bad_records_are_bge_m3_encodes(tmp_path):
    """The example's reader against bge-m3-encode on a corpus with every kind of bad record,
    blank lines, records without ids and a range size that cuts it into many ranges: the same
    ids in the same order, the same records skipped; `fail` names the first bad record's line as
    bge-m3-encode does."""
    ray_encode = load_example()
    path = tmp_path / "corpus.jsonl"
    corpus(path, 1200, bad=True)
    ranges = ray_encode.plan([str(path)], 7, MAX_TEXT_CHARS)
    assert len(ranges) > 100
    read = [ray_encode.read_range({k: np.array([r[k]]) for k in r}, "text", "id", MAX_TEXT_CHARS, "skip")
            for r in ranges]
    ids = [i for table in read for i in table.column("id").to_pylist()]
    positions = [p for table in read for p in table.column("position").to_pylist()]

    out = tmp_path / "reference.jsonl"
    done = subprocess.run([encoder_binary(), "--model", str(MODEL), str(path), "-o", str(out),
                           "--outputs", "dense", "--on-error", "skip", "--max-text-chars", str(MAX_TEXT_CHARS),
                           "--progress", "log"],
                          timeout=RUN_TIMEOUT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [str(i) for i in expected]
    skipped = 1200 + sum(1 for i in range(1200) if i % 101 == 50) - len(ids)
    assert skipped == len(BAD_LINES) + 1  # one kind twice
    assert f"{skipped} bad records skipped" in done.stderr
    assert sorted(set(positions)) == positions

    failed = subprocess.run([encoder_binary(), "--model", str(MODEL), str(path), "-o",
                             str(tmp_path / "failed.jsonl"), "--max-text-chars", str(MAX_TEXT_CHARS),
                             "--progress", "log"], timeout=RUN_TIMEOUT, capture_output=True,
                            text=True)
    assert failed.returncode == 1
    where = f"stopped at a bad record: {path}:{51 + 1 + 1}: "  # a blank line before it
    assert where in failed.stderr
    with pytest.raises(ray_encode.BadRecord, match="^" + where + "invalid JSON"):
        for r in ranges:
            ray_encode.read_range({k: np.array([r[k]]) for k in r}, "text", "id", MAX_TEXT_CHARS, "fail")


def wait_for(what: str, condition, process, log: Path, timeout=RUN_TIMEOUT):
    """Polls `condition` until it holds (an event, not a time); fails after `timeout` seconds,
    or as soon as `process` has exited (showing its output, `log`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {what}:\n"
                        + log.read_text())
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def children_titles(parent: int) -> list:
    """The command lines (Ray's process titles) of the processes whose parent is `parent`."""
    titles = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                # pid (comm) state ppid ...: comm may hold spaces, not a ')'-free tail.
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            if ppid == parent:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    titles.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone
    return titles


def test_a_worker_node_killed_mid_run_loses_and_repeats_no_record(tmp_path):
    """A Ray cluster of three raylets on this machine: the head (reads, writes) and two worker
    nodes holding one encoder actor each. Once the first Parquet file is written, one worker
    node is killed (its raylet and every process on it) while its actor encodes a batch; Ray
    retries the lost work on the surviving actor (no node takes the dead one's place). Every
    record is then in the output exactly once, the bad ones skipped as bge-m3-encode skips them,
    with bge-m3-encode's values within 1e-5."""
    from ray.cluster_utils import Cluster

    path = tmp_path / "corpus.jsonl"
    corpus(path, 2000, bad=True)
    outputs = "dense,sparse,colbert"
    expected = pq.read_table(reference(tmp_path, path, outputs))

    node = {"num_cpus": 1, "resources": {"encoder": 1}, "object_store_memory": 100 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 100 << 20, "include_dashboard": False})
    run = None
    try:
        workers = [cluster.add_node(**node) for _ in range(2)]
        cluster.wait_for_nodes()
        out = tmp_path / "ray-out"
        # Into a file, not a pipe: nothing reads the run's output while it runs.
        log = open(tmp_path / "run.log", "w")
        run = subprocess.Popen(
            [sys.executable, str(EXAMPLE), str(path), "-o", str(out), "--model", str(MODEL),
             "--address", cluster.address, "--actors", "2", "--cpus-per-actor", "1",
             "--actor-resource", "encoder=1", "--batch-size", "10", "--records-per-range", "50",
             "--outputs", outputs, "--on-error", "skip", "--max-text-chars", str(MAX_TEXT_CHARS)],
            stdout=log, stderr=subprocess.STDOUT)
        # The event: a batch written, and the actor of the node to kill inside its next one
        # (Ray titles a worker process by the method it runs).
        raylet = workers[1].all_processes["raylet"][0].process.pid
        wait_for("a Parquet file written and the second node's actor encoding a batch",
                 lambda: out.is_dir() and any(p.suffix == ".parquet" for p in out.iterdir())
                 and any("MapBatches(Encoder)).submit" in title
                         for title in children_titles(raylet)),
                 process=run, log=tmp_path / "run.log")
        cluster.remove_node(workers[1], allow_graceful=False)
        assert run.poll() is None, "the run ended before the kill"
        run.wait(timeout=RUN_TIMEOUT)
        stderr = (tmp_path / "run.log").read_text()
        assert run.returncode == 0, stderr
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        cluster.shutdown()
    assert "complete" in stderr and "NOT complete" not in stderr, stderr

    written = pyarrow.dataset.dataset(out, format="parquet").to_table()
    positions = written.column("position").to_pylist()
    assert len(positions) == len(set(positions)) == expected.num_rows
    # The columns bge-m3-encode writes, with its types, then `position`.
    assert written.schema.remove(written.schema.get_field_index("position")).equals(
        expected.schema), f"{written.schema} != {expected.schema}"
    # Ids repeat in the corpus (doc-0): compare in position order.
    written = written.take(np.argsort(positions))
    assert written.column("id").to_pylist() == expected.column("id").to_pylist()
    assert written.column("tokens").to_pylist() == expected.column("tokens").to_pylist()
    for got, want in zip(written.to_pylist(), expected.to_pylist()):
        what = f"record {got['id']}"
        assert_close(got["dense"], want["dense"], f"{what}: dense")
        assert got["sparse"]["indices"] == want["sparse"]["indices"], f"{what}: sparse indices"
        assert_close(got["sparse"]["values"], want["sparse"]["values"], f"{what}: sparse")
        assert_close(got["colbert"], want["colbert"], f"{what}: colbert")


def test_the_check_finds_a_repeated_and_a_missing_record(tmp_path):
    """`ray_encode.py check` on an output with one file twice (what a write retried under
    another name would leave) and on one with a file removed: each named, status 1."""
    ray_encode = load_example()
    path = tmp_path / "corpus.jsonl"
    corpus(path, 40, bad=False)
    ranges = ray_encode.plan([str(path)], 10, 1_000_000)
    out = tmp_path / "out"
    out.mkdir()
    for i, r in enumerate(ranges):
        table = ray_encode.read_range({k: np.array([r[k]]) for k in r}, "text", "id", 1_000_000,
                                      "fail")
        table = table.append_column("tokens", pyarrow.array([1] * table.num_rows,
                                                            pyarrow.uint32()))
        pq.write_table(table.drop_columns(["text"]), out / f"part-{i}.parquet")
    check = [sys.executable, str(EXAMPLE), "check", str(path), str(out)]
    done = subprocess.run(check, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "40 documents, 40 tokens, 0 bad records skipped, 1 repeated ids; 40 input records; " \
           "complete" in done.stderr

    (out / "again.parquet").write_bytes((out / "part-1.parquet").read_bytes())
    done = subprocess.run(check, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 1
    assert "10 rows repeat a position written before (the first: [10, 11, 12, 13, 14])" \
        in done.stderr

    (out / "again.parquet").unlink()
    (out / "part-2.parquet").unlink()
    done = subprocess.run(check, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 1
    assert f"{path}:" in done.stderr and ": record 20 is missing" in done.stderr


@pytest.mark.parametrize("arguments, message", [
    (["missing.jsonl", "-o", "out"], "missing.jsonl: No such file or directory"),
    (["corpus.jsonl", "-o", "full"], "-o full: not empty; give a new directory"),
    (["corpus.jsonl", "-o", "out", "--outputs", "dense,lexical"], "invalid --outputs: lexical"),
    (["corpus.jsonl", "-o", "out", "--actors", "0"], "--actors must be at least 1"),
    (["corpus.jsonl", "-o", "out", "--actor-resource", "encoder"],
     "invalid --actor-resource 'encoder': NAME=AMOUNT"),
    (["check", "corpus.jsonl", "missing"], "missing: not a directory"),
])
def test_wrong_usage_is_refused_naming_the_argument(tmp_path, arguments, message):
    """Each refused before Ray starts, with a message naming what is wrong, status 2 (argparse)
    or 1; nothing written."""
    corpus(tmp_path / "corpus.jsonl", 3, bad=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"")
    done = subprocess.run([sys.executable, str(EXAMPLE), *arguments], cwd=tmp_path,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode in (1, 2), done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_corpus_writes_nothing_and_checks_complete(tmp_path):
    """Blank lines only: no record, no Ray, an empty output directory that checks complete."""
    (tmp_path / "corpus.jsonl").write_text("\n  \n")
    done = subprocess.run([sys.executable, str(EXAMPLE), "corpus.jsonl", "-o", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "0 documents, 0 tokens, 0 bad records skipped, 0 repeated ids; 0 input records; " \
           "complete" in done.stderr
    assert os.listdir(tmp_path / "out") == []
