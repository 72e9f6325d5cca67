"""What `bench/harness.py` makes of its runs: medians, parity between the engines, the ratios,
issue 10's and issue 25's targets (each pass or MISS) and the tables it prints."""

import statistics

GB = 1e9

# Issue 10's targets, measured side by side in one run.
# scenario -> engine -> the least ratio of the server's tokens/s to that engine's.
THROUGHPUT_TARGETS = {
    "short": {"flagembedding": 1.35, "onnxruntime": 1.0},
    "passages": {"flagembedding": 1.95, "onnxruntime": 1.0},
    "document": {"flagembedding": 1.9},
}
LATENCY_TARGET = 1.5  # the server's median latency over the weight-read floor, at most
READY_TARGET_S = 10.0  # the server's start to a healthy /health, from a warm page cache
LOAD_RSS_TARGET_BYTES = 2.8 * GB  # the server's peak RSS from start to ready
RUN_RSS_TARGET_BYTES = 3.0 * GB  # the server's peak RSS over a run with the 8192-token document

# Issue 25's, for the server with DTYPE=int8, side by side in the same run.
INT8_THROUGHPUT_TARGETS = {  # scenario -> engine -> the least ratio of server-int8's tokens/s
    "short": {"server": 1.6, "onnxruntime-int8": 1.0},
    "passages": {"server": 1.6, "onnxruntime-int8": 1.0},
}
INT8_LATENCY_TARGET = 0.6  # server-int8's median single-query latency over the server's, at most
INT8_RSS_TARGET_BYTES = 1.2 * GB  # server-int8's peak RSS from start through every scenario

# The ratios printed for the int8 engines: (engine, against), tokens/s and median latency.
PAIRS = (("server-int8", "server"), ("server-int8", "onnxruntime-int8"),
         ("onnxruntime-int8", "onnxruntime"))

# Dense parity between the engines.
DENSE_ATOL = 1e-4
DENSE_MIN_COSINE = 0.9999

LABELS = {"server": "server", "server-int8": "server int8", "flagembedding": "FlagEmbedding",
          "onnxruntime": "ONNX Runtime", "onnxruntime-int8": "ONNX Runtime int8"}


# ---------------------------------------------------------------------------------------------
# Medians


def summarize(runs: list) -> dict:
    """A throughput scenario: the median over the runs (each run is kept beside it)."""
    summary = {
        "tokens": runs[0]["tokens"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
        "cores_used": statistics.median(r["cores_used"] for r in runs),
        "tokens_per_cpu_s": statistics.median(r["tokens"] / r["cpu_seconds"] for r in runs),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "runs": runs,
    }
    if "tokens_per_s_without_probe" in runs[0]:
        summary["tokens_per_s_without_probe"] = statistics.median(
            r["tokens_per_s_without_probe"] for r in runs)
    return summary


# Per-call series besides the latency itself, when an engine reports them.
LATENCY_PARTS = ("inference_s", "forward_s", "latencies_without_probe_s")


def summarize_latency(runs: list, floor_s: float) -> dict:
    """The latency scenario: median and best over every call of every run, and over the
    weight-read floor."""
    calls = [x for r in runs for x in r["latencies_s"]]
    summary = {
        "calls": len(calls),
        "tokens_per_call": runs[0]["tokens"] // len(runs[0]["latencies_s"]),
        "median_s": statistics.median(calls),
        "best_s": min(calls),
        "median_over_floor": statistics.median(calls) / floor_s,
        "best_over_floor": min(calls) / floor_s,
        "cores_used": statistics.median(r["cores_used"] for r in runs),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "runs": runs,
    }
    for part in LATENCY_PARTS:
        if part in runs[0]:
            values = [x for r in runs for x in r[part]]
            summary[part[:-2] + "_median_s"] = statistics.median(values)
            summary[part[:-2] + "_best_s"] = min(values)
    return summary


def summarize_floor(measurements: list) -> dict:
    """The floor is the fastest read of any measurement (each the best of its tries)."""
    best = min(measurements, key=lambda m: m["seconds"])
    return {
        "bytes": best["bytes"],
        "seconds": best["seconds"],
        "bytes_per_s": best["bytes_per_s"],
        "method": best["method"],
        # False if any measurement saw more than one thread, None if none could tell.
        "single_threaded": (False if any(m["single_threaded"] is False for m in measurements)
                            else True if any(m["single_threaded"] for m in measurements)
                            else None),
        "measurements": measurements,
    }


# ---------------------------------------------------------------------------------------------
# Parity


def parity(reference: dict, other: dict) -> dict:
    a, b = reference["dense"], other["dense"]
    dot = sum(x * y for x, y in zip(a, b))
    norms = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    cosine = dot / norms if norms else 0.0
    max_diff = max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")
    keys = set(reference["sparse"]) | set(other["sparse"])
    sparse_diff = max((abs(reference["sparse"].get(k, 0.0) - other["sparse"].get(k, 0.0))
                       for k in keys), default=0.0)
    check = {
        "dense_max_abs_diff": max_diff,
        "dense_cosine": cosine,
        "sparse_max_abs_diff": sparse_diff,
        "sparse_same_ids": set(reference["sparse"]) == set(other["sparse"]),
        "pass": max_diff <= DENSE_ATOL and cosine >= DENSE_MIN_COSINE,
    }
    if "padded_dense_max_abs_diff" in other:
        # The engine's own check that padding in a batch does not change a text's vector.
        check["padded_dense_max_abs_diff"] = other["padded_dense_max_abs_diff"]
        check["pass"] = check["pass"] and other["padded_dense_max_abs_diff"] <= DENSE_ATOL
    return check


# ---------------------------------------------------------------------------------------------
# Ratios and targets


def throughput_rows(scenarios: list, engines: dict, texts_info: dict, clients: dict) -> list:
    """One row per throughput scenario: each engine's figures, and the server's ratios."""
    rows = []
    for name in scenarios:
        figures = {key: info["scenarios"][name] for key, info in engines.items()}
        row = {"scenario": name, "texts": texts_info[name]["count"],
               "tokens": next(iter(figures.values()))["tokens"], "clients": clients[name],
               "engines": {key: {k: v for k, v in f.items() if k != "runs"}
                           for key, f in figures.items()},
               "notes": {key: engine_note(key, f) for key, f in figures.items()}}
        if "server" in figures:
            ours = figures["server"]
            row["server_over"] = {key: ours["tokens_per_s"] / f["tokens_per_s"]
                                  for key, f in figures.items() if key != "server"}
            # Tokens per CPU-second of each engine's process: less sensitive to other load
            # than wall time, though spinning threads of a starved engine count as work.
            row["server_over_per_cpu_s"] = {key: ours["tokens_per_cpu_s"] / f["tokens_per_cpu_s"]
                                            for key, f in figures.items() if key != "server"}
            if "flagembedding" in figures:
                row["server_over_flagembedding_without_probe"] = (
                    ours["tokens_per_s"] / figures["flagembedding"]["tokens_per_s_without_probe"])
        rows.append(row)
    return rows


COMPARISONS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def target(what: str, value, comparison: str, bound: float, unit: str = "x") -> dict:
    """One target; `value` None when the run did not measure it."""
    passed = None if value is None else COMPARISONS[comparison](value, bound)
    return {"target": what, "value": value, "comparison": comparison, "bound": bound,
            "unit": unit, "pass": passed}


def pair_ratios(rows: list, latency) -> list:
    """Each pair of PAIRS that ran: tokens/s ratio per throughput scenario, median latency
    ratio."""
    out = []
    for engine, other in PAIRS:
        pair = {"engine": engine, "against": other, "tokens_per_s": {}}
        for row in rows:
            figures = row["engines"]
            if engine in figures and other in figures:
                pair["tokens_per_s"][row["scenario"]] = (figures[engine]["tokens_per_s"]
                                                         / figures[other]["tokens_per_s"])
        engines = (latency or {}).get("engines", {})
        if engine in engines and other in engines:
            pair["median_latency"] = engines[engine]["median_s"] / engines[other]["median_s"]
        if pair["tokens_per_s"] or "median_latency" in pair:
            out.append(pair)
    return out


def targets(rows: list, latency, engines: dict, scenarios: list) -> list:
    """Issue 10's targets, then issue 25's, in their order; those the run did not measure have
    pass None."""
    by_name = {row["scenario"]: row for row in rows}
    out = []
    for name, bounds in THROUGHPUT_TARGETS.items():
        for key, bound in bounds.items():
            ratio = by_name.get(name, {}).get("server_over", {}).get(key)
            what = f"{name}: server tokens/s over {LABELS[key]}"
            what += " encode()" if key == "flagembedding" else ""
            out.append(target(what, ratio, ">=", bound))
    ours = (latency or {}).get("engines", {}).get("server")
    out.append(target("latency: server median over the weight-read floor",
                      ours["median_over_floor"] if ours else None, "<=", LATENCY_TARGET))
    server = engines.get("server")
    out.append(target("server peak RSS from start to ready",
                      server["load_peak_rss_bytes"] / GB if server else None, "<=",
                      LOAD_RSS_TARGET_BYTES / GB, " GB"))
    with_document = server is not None and "document" in scenarios
    out.append(target("server peak RSS, whole run with the 8192-token document",
                      server["peak_rss_bytes"] / GB if with_document else None, "<=",
                      RUN_RSS_TARGET_BYTES / GB, " GB"))
    out.append(target("server time to ready (warm page cache)",
                      server["time_to_ready_s"] if server else None, "<", READY_TARGET_S, " s"))

    for name, bounds in INT8_THROUGHPUT_TARGETS.items():
        for key, bound in bounds.items():
            figures = by_name.get(name, {}).get("engines", {})
            ratio = (figures["server-int8"]["tokens_per_s"] / figures[key]["tokens_per_s"]
                     if "server-int8" in figures and key in figures else None)
            out.append(target(f"{name}: server int8 tokens/s over {LABELS[key]}", ratio, ">=",
                              bound))
    timed = (latency or {}).get("engines", {})
    ratio = (timed["server-int8"]["median_s"] / timed["server"]["median_s"]
             if "server-int8" in timed and "server" in timed else None)
    out.append(target("latency: server int8 median over the server's", ratio, "<=",
                      INT8_LATENCY_TARGET))
    int8 = engines.get("server-int8")
    out.append(target("server int8 peak RSS from start through every scenario",
                      int8["peak_rss_bytes"] / GB if int8 else None, "<=",
                      INT8_RSS_TARGET_BYTES / GB, " GB"))
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def engine_note(key: str, figures: dict) -> str:
    runs = figures["runs"]
    if key.startswith("server") and runs[0].get("forward_passes"):
        r = runs[-1]
        return (f"{plural(r['forward_passes'], 'pass')} of {r['texts_per_pass']:.1f} texts, "
                f"{r['padding_efficiency']:.0%} of tokens not padding")
    if key == "flagembedding" and "tokens_per_s_without_probe" in figures:
        return (f"{figures['tokens_per_s_without_probe']:.1f} tok/s without its probe pass "
                f"({runs[-1]['probe_seconds']:.2f} s)")
    if key.startswith("onnxruntime"):
        r = runs[-1]
        texts = r["texts_per_pass"] * r["forward_passes"]
        real = (r["tokens"] + 2 * texts) / r["padded_tokens"]  # <s> and </s> are computed too
        return (f"{plural(r['forward_passes'], 'batch')} of {r['texts_per_pass']:.1f} texts, "
                f"{real:.0%} of tokens not padding")
    return ""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'es' if count != 1 else ''}"


def print_throughput(rows: list):
    head = (f"{'scenario':<9}{'texts':>6}{'tokens':>7}{'clients':>8}  {'engine':<14}"
            f"{'tok/s':>8}{'s':>8}{'cores':>6}{'tok/CPU-s':>10}{'RSS GB':>7}"
            f"{'server x':>9}{'per CPU-s':>10}  notes")
    print()
    print(head)
    print("-" * len(head))
    for row in rows:
        first = True
        for key, f in row["engines"].items():
            lead = (f"{row['scenario']:<9}{row['texts']:>6}{row['tokens']:>7}{row['clients']:>8}"
                    if first else " " * 30)
            first = False
            ratio = row.get("server_over", {}).get(key)
            per_cpu = row.get("server_over_per_cpu_s", {}).get(key)
            print(f"{lead}  {LABELS[key]:<14}{f['tokens_per_s']:>8.1f}{f['seconds']:>8.2f}"
                  f"{f['cores_used']:>6.2f}{f['tokens_per_cpu_s']:>10.1f}"
                  f"{f['peak_rss_bytes'] / GB:>7.2f}"
                  f"{(f'{ratio:.2f}x' if ratio else ''):>9}"
                  f"{(f'{per_cpu:.2f}x' if per_cpu else ''):>10}  "
                  f"{row['notes'][key]}")


def print_latency(latency: dict):
    floor = latency["floor"]
    print()
    print(f"latency: one query of {latency['tokens_per_call']} tokens, alone on an idle engine, "
          f"{latency['calls_per_engine']} calls per engine")
    print(f"weight-read floor: {floor['bytes'] / GB:.3f} GB (the encoder layers' weights in f32) "
          f"read once by one core in {floor['seconds'] * 1e3:.1f} ms "
          f"({floor['bytes_per_s'] / GB:.1f} GB/s, {floor['method']}, best of "
          f"{len(floor['measurements'])} x 5; one thread: "
          f"{ {True: 'yes', False: 'NO', None: 'too short to tell'}[floor['single_threaded']]})")
    head = f"{'engine':<14}{'median ms':>10}{'best ms':>9}{'median/floor':>13}{'best/floor':>11}  notes"
    print(head)
    print("-" * len(head))
    for key, s in latency["engines"].items():
        if key.startswith("server"):
            note = f"x-inference-time median {s['inference_median_s'] * 1e3:.1f} ms"
        elif key == "flagembedding":
            note = (f"encode() runs 2 passes; one pass {s['forward_median_s'] * 1e3:.1f} ms, "
                    f"encode() without the probe {s['latencies_without_probe_median_s'] * 1e3:.1f}"
                    f" ms")
        else:
            note = f"session.run median {s['forward_median_s'] * 1e3:.1f} ms"
        print(f"{LABELS[key]:<14}{s['median_s'] * 1e3:>10.1f}{s['best_s'] * 1e3:>9.1f}"
              f"{s['median_over_floor']:>12.2f}x{s['best_over_floor']:>10.2f}x  {note}")


def print_pairs(pairs: list):
    if not pairs:
        return
    print()
    print("int8 ratios (tokens/s; median latency):")
    for pair in pairs:
        parts = [f"{name} {ratio:.2f}x" for name, ratio in pair["tokens_per_s"].items()]
        if "median_latency" in pair:
            parts.append(f"latency {pair['median_latency']:.2f}x")
        print(f"  {LABELS[pair['engine']]} / {LABELS[pair['against']]}: {', '.join(parts)}")


def print_targets(checks: list):
    print()
    print("targets of issues 10 and 25:")
    for t in checks:
        verdict = {True: "pass", False: "MISS", None: "not run"}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        print(f"  {verdict:<8}{t['target']}: {value} (target {t['comparison']} "
              f"{t['bound']:.2f}{t['unit']})")


def print_engines(engines: dict, checks: dict):
    print()
    for key, info in engines.items():
        line = (f"{LABELS[key]}: ready after {info['time_to_ready_s']:.2f} s, peak RSS at ready "
                f"{info['load_peak_rss_bytes'] / GB:.2f} GB, whole run {info['peak_rss_bytes'] / GB:.2f} GB")
        if not key.startswith("server"):
            line += " (imports included)"
        print(line)
    for key, check in checks.items():
        padded = ""
        if "padded_dense_max_abs_diff" in check:
            padded = f", padded in a batch vs alone {check['padded_dense_max_abs_diff']:.2e}"
        print(f"parity on one passage, {LABELS[key]} against {LABELS[check['reference']]}: "
              f"dense max |diff| {check['dense_max_abs_diff']:.2e}, cosine "
              f"{check['dense_cosine']:.7f}, sparse max |diff| {check['sparse_max_abs_diff']:.2e}"
              f"{padded} ({verdict(check)})")


def verdict(check: dict) -> str:
    if check.get("enforced", True):
        return "pass" if check["pass"] else "FAIL"
    return "reported only: reduced precision"
