#!/usr/bin/env python3
"""How far a reduced precision of our engine moves the outputs and rankings from f32.

    python3 bench/quality.py --model DIR --dtype CANDIDATE [--baseline-dtype f32]
        [--corpus fixtures/trained/corpus.jsonl.gz] [--docs N] [--queries N]
        [--targets trained|random|none] [--target NAME=VALUE ...] [--encode-bin PATH]
        [--encode-arg=--threads=2 ...] [--out FILE]

Needs numpy (the fixtures' virtualenv has it, or fixtures/trained/requirements.txt). The
corpus (documents and queries, see fixtures/trained/corpus.py) is encoded twice by
`bge-m3-encode --device cpu --dtype X --outputs dense,sparse,colbert --sparse-format id`,
once with the baseline (f32) and once with the candidate, queries and documents in one JSONL
run each; the two outputs are then read side by side, line by line (so memory holds the
dense and sparse vectors, never the ColBERT rows of more than one text). The dtype is passed
through as a name, so `--dtype int8` works once the engine has it.

Figures, candidate against baseline, over every text (documents and queries) unless said:

- dense_cos_min, dense_cos_mean: cosine of the two dense vectors;
- colbert_cos_p5 (and colbert_cos_min, reported): cosine of each ColBERT row with the same
  row of the baseline, over all rows of all texts; the 5th percentile (numpy's linear one);
- sparse_top10: per text, the k = min(10, tokens with a positive baseline weight) tokens of
  largest weight in each (ties broken by id), |common| / k, averaged over the texts with k > 0;
- dense_top10, sparse_top10_docs, fused_top10: per query, the 10 documents of highest score
  in each, |common| / 10, averaged over the queries. Dense score: the dot product of the
  (normalised) dense vectors. Sparse score: FlagEmbedding's lexical matching score, the sum
  over the tokens both have of the product of their weights; only documents with a positive
  score are ranked, k = min(10, such documents for the baseline), queries with k = 0 are left
  out (their count is reported). Fused: FlagEmbedding's `sparse+dense`, (w_d * dense + w_s *
  sparse) / (w_d + w_s) with `--fusion-weights` w_d,w_s (default 0.4,0.2, the dense and sparse
  weights of FlagEmbedding's `compute_score` default [0.4, 0.2, 0.4]).

Targets (a figure below its target is a MISS, and the script exits 1): `--targets trained`
(default) is issue 25's for int8 on the trained model: dense_cos_min 0.995, dense_cos_mean
0.999, colbert_cos_p5 0.98, sparse_top10 0.80, dense_top10 0.90, fused_top10 0.90,
sparse_top10_docs 0.80. `--targets random`, the issue's for the full-size random model:
dense_cos_min 0.99, colbert_cos_p5 0.98, the rest reported without a target. `--targets none`
only reports. `--target NAME=VALUE` sets or overrides one (VALUE `none` removes it).
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "fixtures" / "trained" / "corpus.jsonl.gz"

FIGURES = ("dense_cos_min", "dense_cos_mean", "colbert_cos_p5", "colbert_cos_min",
           "sparse_top10", "dense_top10", "sparse_top10_docs", "fused_top10")
TARGETS = {
    "trained": {"dense_cos_min": 0.995, "dense_cos_mean": 0.999, "colbert_cos_p5": 0.98,
                "sparse_top10": 0.80, "dense_top10": 0.90, "fused_top10": 0.90,
                "sparse_top10_docs": 0.80},
    "random": {"dense_cos_min": 0.99, "colbert_cos_p5": 0.98},
    "none": {},
}
TOP = 10


def log(line: str):
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def spread(items: list, n) -> list:
    """`n` of `items` spread evenly over them (the corpus is in library order, so the first
    `n` would all come from a few modules), in their order; all of them when `n` is None."""
    if n is None or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def read_corpus(path: Path, docs: int, queries: int) -> list:
    """`queries` queries and `docs` documents spread over the corpus, queries first."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    q = [r for r in records if r["kind"] == "query"]
    d = [r for r in records if r["kind"] == "doc"]
    d, q = spread(d, docs), spread(q, queries)
    if not q or not d:
        sys.exit(f"quality: {path} gives {len(q)} queries and {len(d)} documents; need both")
    return q + d


def encode_bin(args) -> Path:
    if args.encode_bin:
        return args.encode_bin
    log("building bge-m3-encode: cargo build --release -p bge-m3-encode")
    if subprocess.run(["cargo", "build", "--release", "-p", "bge-m3-encode"],
                      cwd=REPO).returncode != 0:
        sys.exit("quality: the build failed; fix it or pass --encode-bin PATH")
    return REPO / "target" / "release" / "bge-m3-encode"


def max_length(model: Path) -> int:
    """The longest input the model's position table holds, at most 8192 (RoBERTa positions
    start after the pad id), so that a short-positioned model truncates instead of refusing."""
    config = json.loads((model / "config.json").read_text())
    return min(8192, config["max_position_embeddings"] - config.get("pad_token_id", 1) - 1)


def run_encoder(binary: Path, args, dtype: str, inputs: Path, output: Path) -> float:
    command = [str(binary), "--model", str(args.model), "--device", "cpu", "--dtype", dtype,
               "--max-length", str(max_length(args.model)),
               "--outputs", "dense,sparse,colbert", "--sparse-format", "id",
               "--progress", "log", "--log-every", "30", *args.encode_arg,
               str(inputs), "-o", str(output)]
    log(f"encoding with --dtype {dtype}: {' '.join(command)}")
    start = time.perf_counter()
    done = subprocess.run(command)
    if done.returncode != 0:
        sys.exit(f"quality: bge-m3-encode --dtype {dtype} exited with status {done.returncode}")
    return time.perf_counter() - start


def top(scores: np.ndarray, k: int) -> set:
    """Indices of the k largest scores, ties broken by index (stable)."""
    order = np.argsort(-scores, kind="stable")
    return set(order[:k].tolist())


def sparse_top_tokens(weights: dict, k: int) -> set:
    return {t for t, _ in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; a zero row against a zero row counts as 1, against another as 0."""
    dot = np.einsum("ij,ij->i", a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(na * nb > 0, dot / (na * nb), 0.0)
    return np.where(both_zero, 1.0, cos)


def compare(base_path: Path, cand_path: Path, records: list, fusion: tuple) -> dict:
    n_queries = sum(r["kind"] == "query" for r in records)
    dense_b, dense_c, sparse_b, sparse_c = [], [], [], []
    colbert_cos, token_overlap, tokens = [], [], 0
    with open(base_path, encoding="utf-8") as fb, open(cand_path, encoding="utf-8") as fc:
        for i, (record, lb, lc) in enumerate(zip(records, fb, fc)):
            b, c = json.loads(lb), json.loads(lc)
            if not (b["id"] == c["id"] == record["id"]) or b["tokens"] != c["tokens"]:
                sys.exit(f"quality: line {i + 1}: ids {b['id']!r}/{c['id']!r} or token counts "
                         f"{b['tokens']}/{c['tokens']} differ (expected {record['id']!r})")
            tokens += b["tokens"]
            dense_b.append(b["dense"])
            dense_c.append(c["dense"])
            cb = np.asarray(b["colbert"], dtype=np.float64)
            cc = np.asarray(c["colbert"], dtype=np.float64)
            if cb.shape != cc.shape:
                sys.exit(f"quality: {record['id']}: ColBERT shapes {cb.shape} and {cc.shape}")
            if cb.size:
                colbert_cos.append(cosine(cb, cc))
            wb = {int(k): v for k, v in b["sparse"].items()}
            wc = {int(k): v for k, v in c["sparse"].items()}
            sparse_b.append(wb)
            sparse_c.append(wc)
            k = min(TOP, sum(1 for v in wb.values() if v > 0))
            if k:
                common = sparse_top_tokens(wb, k) & sparse_top_tokens(wc, k)
                token_overlap.append(len(common) / k)
        if next(fb, None) is not None or next(fc, None) is not None or i + 1 != len(records):
            sys.exit("quality: the outputs do not have one line per input")
    dense_b = np.asarray(dense_b, dtype=np.float64)
    dense_c = np.asarray(dense_c, dtype=np.float64)
    dense_cos = cosine(dense_b, dense_c)
    rows = np.concatenate(colbert_cos)

    def sparse_scores(weights: list) -> np.ndarray:
        """(queries, docs): FlagEmbedding's lexical matching score."""
        queries, docs = weights[:n_queries], weights[n_queries:]
        index = {}
        for j, doc in enumerate(docs):
            for token, w in doc.items():
                index.setdefault(token, []).append((j, w))
        scores = np.zeros((len(queries), len(docs)))
        for i, query in enumerate(queries):
            for token, w in query.items():
                for j, dw in index.get(token, ()):
                    scores[i, j] += w * dw
        return scores

    dense_scores_b = dense_b[:n_queries] @ dense_b[n_queries:].T
    dense_scores_c = dense_c[:n_queries] @ dense_c[n_queries:].T
    sparse_scores_b, sparse_scores_c = sparse_scores(sparse_b), sparse_scores(sparse_c)
    wd, ws = fusion
    fused_b = (wd * dense_scores_b + ws * sparse_scores_b) / (wd + ws)
    fused_c = (wd * dense_scores_c + ws * sparse_scores_c) / (wd + ws)
    k = min(TOP, dense_scores_b.shape[1])
    dense_overlap, fused_overlap, sparse_overlap, no_sparse_match = [], [], [], 0
    for i in range(n_queries):
        dense_overlap.append(len(top(dense_scores_b[i], k) & top(dense_scores_c[i], k)) / k)
        fused_overlap.append(len(top(fused_b[i], k) & top(fused_c[i], k)) / k)
        ks = min(TOP, int((sparse_scores_b[i] > 0).sum()))
        if ks == 0:
            no_sparse_match += 1
            continue
        positive_c = np.where(sparse_scores_c[i] > 0, sparse_scores_c[i], -np.inf)
        sparse_overlap.append(len(top(np.where(sparse_scores_b[i] > 0, sparse_scores_b[i],
                                                -np.inf), ks) & top(positive_c, ks)) / ks)
    figures = {
        "dense_cos_min": float(dense_cos.min()),
        "dense_cos_mean": float(dense_cos.mean()),
        "colbert_cos_p5": float(np.percentile(rows, 5)),
        "colbert_cos_min": float(rows.min()),
        "sparse_top10": float(np.mean(token_overlap)) if token_overlap else float("nan"),
        "dense_top10": float(np.mean(dense_overlap)),
        "sparse_top10_docs": float(np.mean(sparse_overlap)) if sparse_overlap else float("nan"),
        "fused_top10": float(np.mean(fused_overlap)),
    }
    worst = int(dense_cos.argmin())
    counts = {"texts": len(records), "queries": n_queries, "docs": len(records) - n_queries,
              "tokens": tokens, "colbert_rows": int(rows.size),
              "texts_with_sparse_tokens": len(token_overlap),
              "queries_without_sparse_match": no_sparse_match,
              "dense_cos_min_text": records[worst]["id"]}
    return {"figures": figures, "counts": counts}


def parse_targets(args) -> dict:
    targets = dict(TARGETS[args.targets])
    for item in args.target:
        name, sep, value = item.partition("=")
        if not sep or name not in FIGURES:
            sys.exit(f"quality: --target {item!r}: expected NAME=VALUE with NAME one of "
                     f"{', '.join(FIGURES)}")
        if value == "none":
            targets.pop(name, None)
            continue
        try:
            targets[name] = float(value)
        except ValueError:
            sys.exit(f"quality: --target {item!r}: {value!r} is not a number or 'none'")
    return targets


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory")
    p.add_argument("--dtype", required=True, help="the candidate precision (bf16, int8, ...)")
    p.add_argument("--baseline-dtype", default="f32", help="default f32")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                   help="JSONL (.gz) of id, kind (doc/query), text (default: the trained "
                        "fixture's standard-library corpus)")
    p.add_argument("--docs", type=int, help="only N documents, spread evenly over the corpus "
                                            "(default all)")
    p.add_argument("--queries", type=int, help="only N queries, spread evenly (default all)")
    p.add_argument("--targets", choices=sorted(TARGETS), default="trained",
                   help="the set of targets (default trained: issue 25's for the trained model)")
    p.add_argument("--target", action="append", default=[], metavar="NAME=VALUE",
                   help="set one target (VALUE 'none' removes it), repeatable")
    p.add_argument("--fusion-weights", default="0.4,0.2",
                   help="dense and sparse weights of the fused score (default 0.4,0.2)")
    p.add_argument("--encode-bin", type=Path,
                   help="the bge-m3-encode binary (default: cargo build --release)")
    p.add_argument("--encode-arg", action="append", default=[],
                   help="extra bge-m3-encode flag, repeatable (--encode-arg=--threads=2)")
    p.add_argument("--keep", type=Path, help="keep the two JSONL outputs in this directory")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = p.parse_args()
    targets = parse_targets(args)
    try:
        fusion = tuple(float(x) for x in args.fusion_weights.split(","))
        assert len(fusion) == 2 and min(fusion) >= 0 and sum(fusion) > 0
    except (ValueError, AssertionError):
        p.error(f"--fusion-weights {args.fusion_weights!r}: two non-negative numbers, not both 0")
    for name, n in (("--docs", args.docs), ("--queries", args.queries)):
        if n is not None and n < 1:
            p.error(f"{name} must be at least 1")
    if not (args.model / "config.json").is_file():
        sys.exit(f"quality: no model at {args.model} (no config.json)")

    records = read_corpus(args.corpus, args.docs, args.queries)
    binary = encode_bin(args)
    started = datetime.datetime.now().astimezone()
    with tempfile.TemporaryDirectory(prefix="bge-m3-quality-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = work / "inputs.jsonl"
        with open(inputs, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n")
        outputs, seconds = {}, {}
        for dtype in (args.baseline_dtype, args.dtype):
            outputs[dtype] = work / f"{dtype}.jsonl"
            seconds[dtype] = run_encoder(binary, args, dtype, inputs, outputs[dtype])
        result = compare(outputs[args.baseline_dtype], outputs[args.dtype], records, fusion)

    figures, counts = result["figures"], result["counts"]
    print(f"{args.dtype} against {args.baseline_dtype} on {args.model}: {counts['queries']} "
          f"queries and {counts['docs']} documents of {args.corpus.name}, {counts['tokens']} "
          f"tokens, {counts['colbert_rows']} ColBERT rows; encoding took "
          + ", ".join(f"{seconds[d]:.1f} s ({d})" for d in seconds))
    verdicts = {}
    for name in FIGURES:
        value, target = figures[name], targets.get(name)
        if target is None:
            verdict = ""
        else:
            verdicts[name] = bool(value >= target)
            verdict = f">= {target:g}  {'pass' if verdicts[name] else 'MISS'}"
        print(f"  {name:18} {value:.4f}  {verdict}")
    print(f"  (sparse_top10 over {counts['texts_with_sparse_tokens']} texts with a positive "
          f"weight; sparse_top10_docs leaves out {counts['queries_without_sparse_match']} "
          f"queries that match no document; lowest dense cosine: {counts['dense_cos_min_text']}; "
          f"fusion weights {fusion[0]:g}, {fusion[1]:g})")
    if args.out:
        args.out.write_text(json.dumps({
            "started": started.isoformat(timespec="seconds"), "host": platform.node(),
            "cpus": os.cpu_count(), "model": str(args.model), "corpus": str(args.corpus),
            "dtype": args.dtype, "baseline_dtype": args.baseline_dtype,
            "encode_bin": str(binary), "encode_args": args.encode_arg, "fusion": fusion,
            "seconds": seconds, **result, "targets": targets, "pass": verdicts}, indent=1))
    missed = [name for name, ok in verdicts.items() if not ok]
    if missed:
        sys.exit(f"quality: {args.dtype} misses its targets on {', '.join(missed)}")


if __name__ == "__main__":
    main()
