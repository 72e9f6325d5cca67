"""Encode a JSONL corpus with Ray Data and `bge_m3`, into Parquet files with the columns
`bge-m3-encode` writes (docs/ENCODING.md, "Ray Data").

    python ray_encode.py corpus.jsonl -o vectors/ --model BAAI/bge-m3 --actors 2 --cpus-per-actor 8
    python ray_encode.py check corpus.jsonl vectors/        # every record exactly once?

The pipeline: the driver cuts each input file into ranges of records (one pass that only
finds line ends), `ray.data.from_items(ranges)` -> `map_batches(read_range)` parses each
range's records with bge-m3-encode's rules (positions, ids, bad records) -> `map_batches(
Encoder)`, an actor pool in which each actor loads the model once and runs it on as many
threads as it has CPUs -> `write_parquet`. Then the driver checks the written files: every
record of the input is in them exactly once, or was a bad record skipped.

Why not `ray.data.read_json`: its rows carry no position in the corpus, so a record without an
id could not get the id bge-m3-encode gives it (its 0-based position, bad records counted,
blank lines not), and one bad line fails the read of its whole file.

Needs `ray[data]` and `bge_m3` (pip install ./crates/bge-m3-python) on every node, and the
model on every node (a directory at the same path, or a Hub id each node downloads into its
own Hugging Face cache).
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, Iterator, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute

# bge-m3-encode's defaults.
MAX_TEXT_CHARS = 1_000_000
MAX_LENGTH = 8192
# The most records of one read task (a range); the encoder's batches are cut from them.
RECORDS_PER_RANGE = 4096


# ---------------------------------------------------------------------------------------------
# Reading: positions, ids and bad records as bge-m3-encode reads a JSONL file.


def line_limit(max_text_chars: int) -> int:
    """The longest line a record whose text has `max_text_chars` characters can take (12 bytes
    a character escaped in JSON, 1 MiB for the other fields): longer ones are bad records,
    skipped without being kept in memory (bge-m3-encode's `line_limit`)."""
    return max_text_chars * 12 + (1 << 20)


def _lines(f, limit: int) -> Iterator[tuple]:
    """`(start, end, line)` of each line of the binary file `f` from where it stands; `line` is
    None for a line longer than `limit`, read to its end without being kept."""
    start = f.tell()
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        end = start + len(line)
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                rest = f.readline(1 << 20)
                end += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            line = None
        yield start, end, line
        start = end


def _is_blank(line: Optional[bytes]) -> bool:
    """A line that is not a record: UTF-8 and only white space (a line too long, or not UTF-8,
    is a bad record)."""
    if line is None:
        return False
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def plan(paths: List[str], records_per_range: int, max_text_chars: int) -> List[dict]:
    """Cuts the inputs into ranges of at most `records_per_range` records: `path`, byte `start`
    and `end`, the `position` of the first record in the corpus, its `line` (1-based) and the
    `records` the range holds. One pass that reads every byte and parses nothing."""
    ranges = []
    position = 0
    limit = line_limit(max_text_chars)
    for path in paths:
        with open(path, "rb") as f:
            current = None
            for number, (start, end, line) in enumerate(_lines(f, limit), 1):
                if _is_blank(line):
                    if current is not None:
                        current["end"] = end
                    continue
                if current is None or current["records"] == records_per_range:
                    current = {"path": os.path.abspath(path), "start": start, "end": end,
                               "position": position, "line": number, "records": 0}
                    ranges.append(current)
                current["end"] = end
                current["records"] += 1
                position += 1
    return ranges


class BadRecord(ValueError):
    """A record bge-m3-encode would not encode, as `FILE:LINE: what`."""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(line: Optional[bytes], text_field: str, id_field: str, max_text_chars: int,
          limit: int):
    """`(id or None, text)` of one JSONL line, or raises `ValueError` saying what is wrong with
    it, in bge-m3-encode's words."""
    if line is None:
        raise ValueError(f"the line has more than {limit} bytes, more than a record with a text "
                         f"of --max-text-chars {max_text_chars} takes: skipped unread")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the line is not UTF-8 text") from None
    try:
        record = json.loads(text.rstrip("\r\n"), parse_constant=_no_constant)
    except ValueError as e:
        raise ValueError(f"invalid JSON: {e}") from None
    if not isinstance(record, dict):
        raise ValueError("the line is not a JSON object")
    if text_field not in record:
        raise ValueError(f"missing field `{text_field}` (choose the field with --text-field)")
    text = record[text_field]
    # JSON's \ud800 escapes decode to lone surrogates, which are not text (serde_json refuses
    # them as invalid JSON).
    if not isinstance(text, str) or not _is_utf8(text):
        raise ValueError(f"field `{text_field}` is not a string")
    id = record.get(id_field)
    # An integer id must fit in 64 bits, as bge-m3-encode reads it (bool is not an integer).
    if id is not None and not (
        (isinstance(id, str) and _is_utf8(id))
        or (type(id) is int and -(1 << 63) <= id < (1 << 64))
    ):
        raise ValueError(f"field `{id_field}` is not a string or an integer")
    chars = len(text)
    if chars > max_text_chars:
        raise ValueError(f"the text has {chars} characters, over --max-text-chars {max_text_chars}")
    return id, text


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read_range(batch: Dict[str, np.ndarray], text_field: str, id_field: str,
               max_text_chars: int, on_error: str) -> pa.Table:
    """The records of each range of `batch` (a `map_batches` batch of `plan`'s ranges):
    `position` (uint64), `id` (string: the id field as text, an integer in decimal, or the
    position when the record has none) and `text`. A bad record raises `BadRecord` with
    `on_error="fail"` (the run stops, naming it), and is left out, with a line on stderr, with
    `"skip"`."""
    positions, ids, texts = [], [], []
    limit = line_limit(max_text_chars)
    for i in range(len(batch["path"])):
        path, start, end = str(batch["path"][i]), int(batch["start"][i]), int(batch["end"][i])
        position, number = int(batch["position"][i]), int(batch["line"][i])
        with open(path, "rb") as f:
            f.seek(start)
            for _, line_end, line in _lines(f, limit):
                if _is_blank(line):
                    number += 1
                    continue
                try:
                    id, text = parse(line, text_field, id_field, max_text_chars, limit)
                except ValueError as e:
                    bad = f"{path}:{number}: {e}"
                    if on_error == "fail":
                        raise BadRecord(f"stopped at a bad record: {bad}") from None
                    print(f"skipped a bad record: {bad}", file=sys.stderr)
                else:
                    positions.append(position)
                    ids.append(str(position) if id is None else str(id))
                    texts.append(text)
                position += 1
                number += 1
                if line_end >= end:
                    break
    return pa.table({
        "position": pa.array(positions, pa.uint64()),
        "id": pa.array(ids, pa.string()),
        "text": pa.array(texts, pa.string()),
    })


# ---------------------------------------------------------------------------------------------
# Encoding: one model per actor; bge-m3-encode's columns.


def schema(outputs: List[str]) -> pa.Schema:
    """bge-m3-encode's Parquet columns for `outputs` (its `--sparse-format indices`), then
    `position`, the record's place in the corpus, by which the output is checked."""
    fields = [pa.field("id", pa.string(), nullable=False),
              pa.field("tokens", pa.uint32(), nullable=False)]
    if "dense" in outputs:
        fields.append(pa.field("dense", pa.list_(pa.float32())))
    if "sparse" in outputs:
        fields.append(pa.field("sparse", pa.struct([
            pa.field("indices", pa.list_(pa.uint32())),
            pa.field("values", pa.list_(pa.float32())),
        ])))
    if "colbert" in outputs:
        fields.append(pa.field("colbert", pa.list_(pa.list_(pa.float32()))))
    fields.append(pa.field("position", pa.uint64(), nullable=False))
    return pa.schema(fields)


def _lists(arrays: List[np.ndarray], type: pa.DataType) -> pa.Array:
    """A list array of the 1-D `arrays`, built from one flat buffer."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type))


class Encoder:
    """The `map_batches` callable class: each actor of the pool builds one, which loads the
    model once (2.3 GB for BAAI/bge-m3) and runs it on `threads` threads, then encodes every
    batch the pool gives it."""

    def __init__(self, model: str, threads: int, outputs: List[str], max_length: int,
                 max_batch_tokens: int):
        from bge_m3 import BGEM3FlagModel

        self.model = BGEM3FlagModel(model, threads=threads, max_batch_tokens=max_batch_tokens,
                                    show_progress_bar=False)
        self.outputs = outputs
        self.max_length = max_length
        self.schema = schema(outputs)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column("text").to_pylist()
        # The ColBERT vectors are asked for even where they are not written: their count, one
        # per token after <s>, is the only token count the package returns (bge-m3-encode's
        # `tokens` leaves out <s> and </s>). Their head is one matrix product per token, small
        # next to the encoder's layers.
        out = self.model.encode(texts, batch_size=max(len(texts), 1), max_length=self.max_length,
                                return_dense="dense" in self.outputs,
                                return_sparse="sparse" in self.outputs, return_colbert_vecs=True)
        colbert = out["colbert_vecs"]
        columns = {
            "id": batch.column("id"),
            "tokens": pa.array([len(c) - 1 for c in colbert], pa.uint32()),
        }
        if "dense" in self.outputs:
            dense = out["dense_vecs"].reshape(len(texts), -1)
            columns["dense"] = _lists(list(dense), pa.float32())
        if "sparse" in self.outputs:
            # bge-m3-encode's `indices` format: token ids ascending, and their weights.
            pairs = [sorted((int(k), v) for k, v in weights.items())
                     for weights in out["lexical_weights"]]
            indices = [np.array([k for k, _ in p], dtype=np.uint32) for p in pairs]
            values = [np.array([v for _, v in p], dtype=np.float32) for p in pairs]
            columns["sparse"] = pa.StructArray.from_arrays(
                [_lists(indices, pa.uint32()), _lists(values, pa.float32())],
                fields=list(self.schema.field("sparse").type))
        if "colbert" in self.outputs:
            rows = _lists([c.reshape(-1) for c in colbert], pa.float32())
            width = colbert[0].shape[1] if colbert else 0
            counts = np.zeros(len(colbert) + 1, dtype=np.int32)
            np.cumsum([len(c) for c in colbert], out=counts[1:])
            vectors = pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(rows.values) + 1, max(width, 1), dtype=np.int32)),
                rows.values)
            columns["colbert"] = pa.ListArray.from_arrays(pa.array(counts), vectors)
        columns["position"] = batch.column("position")
        return pa.table(columns, schema=self.schema)


# ---------------------------------------------------------------------------------------------
# The pipeline, and the check of its output.


def resources(specs: List[str]) -> Optional[Dict[str, float]]:
    """`--actor-resource NAME=AMOUNT` values as Ray's `resources`."""
    found = {}
    for spec in specs:
        name, _, amount = spec.partition("=")
        try:
            found[name] = float(amount)
        except ValueError:
            sys.exit(f"invalid --actor-resource {spec!r}: NAME=AMOUNT, AMOUNT a number")
        if not name or found[name] <= 0:
            sys.exit(f"invalid --actor-resource {spec!r}: NAME=AMOUNT, AMOUNT above 0")
    return found or None


def encode(args) -> int:
    outputs = args.outputs.split(",")
    unknown = sorted(set(outputs) - {"dense", "sparse", "colbert"})
    if unknown or not outputs:
        sys.exit(f"invalid --outputs: {','.join(unknown) or 'none'} (dense, sparse, colbert)")
    if os.path.exists(args.output) and os.listdir(args.output):
        sys.exit(f"-o {args.output}: not empty; give a new directory (a rerun writes new files "
                 "beside the old ones, and their records would count twice)")
    actor_resources = resources(args.actor_resource)
    started = time.monotonic()
    try:
        ranges = plan(args.inputs, args.records_per_range, args.max_text_chars)
    except OSError as e:
        sys.exit(f"{e.filename}: {e.strerror}")
    records = sum(r["records"] for r in ranges)
    print(f"{records} records in {len(ranges)} ranges ({time.monotonic() - started:.1f} s)",
          file=sys.stderr)
    os.makedirs(args.output, exist_ok=True)
    if ranges:  # else no record to encode: Ray is not needed
        run_pipeline(ranges, outputs, actor_resources, args)
    seconds = time.monotonic() - started
    summary = check(args.inputs, args.output, args)
    print(f"{summary['documents']} documents, {summary['tokens']} tokens, {seconds:.1f} s, "
          f"{summary['tokens'] / seconds:.0f} tokens/s", file=sys.stderr)
    return 0 if summary["ok"] else 1


def run_pipeline(ranges: List[dict], outputs: List[str], actor_resources, args) -> None:
    import ray

    ray.init(address=args.address, log_to_driver=True)
    pipeline(ranges, outputs, actor_resources, args).write_parquet(args.output)


def pipeline(ranges: List[dict], outputs: List[str], actor_resources, args, encoder=None,
             encoder_kwargs=None):
    """The dataset of the encoded rows of `ranges` (`encoder`: a subclass of `Encoder`, and
    its further constructor arguments, for the bench)."""
    import ray

    ds = ray.data.from_items(ranges, override_num_blocks=max(len(ranges), 1))
    ds = ds.map_batches(read_range, batch_size=1, batch_format="numpy", fn_kwargs={
        "text_field": args.text_field, "id_field": args.id_field,
        "max_text_chars": args.max_text_chars, "on_error": args.on_error})
    return ds.map_batches(
        encoder or Encoder, batch_size=args.batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"model": args.model, "threads": args.cpus_per_actor,
                               "outputs": outputs, "max_length": args.max_length,
                               "max_batch_tokens": args.max_batch_tokens,
                               **(encoder_kwargs or {})},
        # One batch queued on each actor besides the one it encodes: enough to hide the
        # hand-over, and not so many that the first actor ready takes every batch of a small
        # corpus while the others still load their model.
        compute=ray.data.ActorPoolStrategy(size=args.actors, max_tasks_in_flight_per_actor=2),
        num_cpus=args.cpus_per_actor, resources=actor_resources)


def check(inputs: List[str], output: str, args) -> dict:
    """Reads the `position`, `id` and `tokens` columns of every file in `output` and checks them
    against the inputs: each record's position exactly once, with its id; a position missing
    only where the input holds a bad record. Prints what it finds; `ok` is False on any
    problem."""
    import pyarrow.dataset

    columns = ["position", "id", "tokens"]
    files = sorted(os.path.join(output, f) for f in os.listdir(output) if f.endswith(".parquet"))
    if files:
        table = pyarrow.dataset.dataset(files, format="parquet").to_table(columns=columns)
    else:  # an empty corpus: Ray writes no file
        table = pa.table({"position": pa.array([], pa.uint64()), "id": pa.array([], pa.string()),
                          "tokens": pa.array([], pa.uint32())})
    positions = table.column("position").to_numpy()
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)[order]
    problems = []
    duplicated = positions[1:][positions[1:] == positions[:-1]]
    if len(duplicated):
        problems.append(f"{len(duplicated)} rows repeat a position written before (the first: "
                        f"{duplicated[:5].tolist()})")
    written = set(positions.tolist())
    skipped = 0
    limit = line_limit(args.max_text_chars)
    want_ids = {}
    # The input once more, record by record: what each position holds.
    position = 0
    for path in inputs:
        with open(path, "rb") as f:
            for number, (_, _, line) in enumerate(_lines(f, limit), 1):
                if _is_blank(line):
                    continue
                try:
                    id, _ = parse(line, args.text_field, args.id_field, args.max_text_chars, limit)
                except ValueError as e:
                    if position in written:
                        problems.append(f"{path}:{number}: a bad record ({e}) is in the output")
                    skipped += 1
                else:
                    if position not in written:
                        problems.append(f"{path}:{number}: record {position} is missing")
                    want_ids[position] = str(position) if id is None else str(id)
                position += 1
    beyond = positions[positions >= position]
    if len(beyond):
        problems.append(f"{len(beyond)} rows have positions past the input's {position} records")
    wrong = [p for p, i in zip(positions.tolist(), ids) if p in want_ids and want_ids[p] != i]
    if wrong:
        problems.append(f"{len(wrong)} rows have another id than their record's (positions "
                        f"{wrong[:5]})")
    distinct = len(set(ids.tolist()))
    summary = {"documents": len(positions), "tokens": int(pa.compute.sum(
        table.column("tokens")).as_py() or 0), "skipped": skipped,
        "repeated_ids": len(positions) - distinct, "records": position,
        "problems": problems, "ok": not problems}
    print(f"{output}: {summary['documents']} documents, {summary['tokens']} tokens, {skipped} bad "
          f"records skipped, {summary['repeated_ids']} repeated ids; {position} input records; "
          + ("complete" if summary["ok"] else "NOT complete"), file=sys.stderr)
    for problem in problems[:20]:
        print(f"check: {problem}", file=sys.stderr)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    checking, args = arguments(sys.argv[1:] if argv is None else argv)
    if checking:
        if not os.path.isdir(args.output):
            sys.exit(f"{args.output}: not a directory")
        try:
            return 0 if check(args.inputs, args.output, args)["ok"] else 1
        except OSError as e:
            sys.exit(f"{e.filename}: {e.strerror}")
    return encode(args)


def arguments(argv: List[str]):
    """`(checking, args)`: the command line of `check` or of an encoding run."""
    checking = bool(argv) and argv[0] == "check"
    parser = argparse.ArgumentParser(
        prog="ray_encode.py" + (" check" if checking else ""),
        description="Check a ray_encode.py output against its inputs." if checking else
        "Encode JSONL files with Ray Data into Parquet files with bge-m3-encode's columns.")
    if checking:
        argv = argv[1:]
        parser.add_argument("inputs", nargs="+", help="the JSONL files, as encoded")
        parser.add_argument("output", help="the output directory")
    else:
        parser.add_argument("inputs", nargs="+", help="JSONL files, read in this order")
        parser.add_argument("-o", "--output", required=True,
                            help="a new (or empty) directory for the Parquet files")
        parser.add_argument("--model", default="BAAI/bge-m3",
                            help="a model directory on every node, or a Hub id")
        parser.add_argument("--address", default=None,
                            help="the Ray cluster (default: RAY_ADDRESS, else a local one)")
        parser.add_argument("--actors", type=int, default=1, help="encoder actors, one model each")
        parser.add_argument("--cpus-per-actor", type=int, default=1,
                            help="CPUs each actor reserves, and the model's threads in it")
        parser.add_argument("--actor-resource", action="append", default=[],
                            metavar="NAME=AMOUNT",
                            help="a custom resource each actor reserves as well, to place the "
                            "actors on the nodes that have it (repeatable)")
        parser.add_argument("--batch-size", type=int, default=256,
                            help="texts an actor encodes per call")
        parser.add_argument("--records-per-range", type=int, default=RECORDS_PER_RANGE,
                            help="records one read task parses")
        parser.add_argument("--outputs", default="dense,sparse",
                            help="comma-separated: dense, sparse, colbert")
        parser.add_argument("--max-length", type=int, default=MAX_LENGTH,
                            help="tokens a text is cut to, <s> and </s> counted")
        parser.add_argument("--max-batch-tokens", type=int, default=16384,
                            help="tokens of one forward pass")
        parser.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                            help="a bad record stops the run (fail) or is left out (skip)")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--id-field", default="id")
    parser.add_argument("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
                        help="a longer text is a bad record")
    args = parser.parse_args(argv)
    for name in ("actors", "cpus_per_actor", "batch_size", "records_per_range", "max_length",
                 "max_batch_tokens", "max_text_chars"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return checking, args


if __name__ == "__main__":
    sys.exit(main())
