"""Issue 27's Ray figure: tokens/s of examples/ray_encode.py's pipeline with one encoder actor
against two, each with one thread (`--cpus-per-actor 1`), on the corpus of
crates/bge-m3-encode/bench/shards.sh (same seed and words), alternately (one, two, one, two,
...), in one Ray cluster started once, so that a change in the machine's load falls on both
alike. The cluster: three raylets on this machine (`ray start`), each in a session of its own
as separate machines would be (a head with one CPU for the read and write tasks, two worker
nodes with one CPU and an `encoder` resource each, one actor each); `SESSIONS=shared`: one
local Ray of 3 CPUs in this script's session instead, where Linux's autogroup scheduling gives
all its processes one share of a busy machine.

For each run it prints: the wall time of the whole pipeline (the actors' model loads and the
Parquet writes included) and the tokens/s over it; "encode tokens/s" over the span from the
first batch an actor starts to the last one it finishes (loads excluded); "cpu_s", the CPU time
the actors' processes spent in `encode` (user + system, all their threads), and "tokens/cpu_s"
the tokens over it: what the work costs whatever else runs; the CPU time that the cluster's
other processes and this driver took over the run, in cores (what Ray itself takes from the
cores the actors run on; with `SESSIONS=shared`, the other processes of this script's session).
And the load average before each run: on a shared machine, a ratio is only worth what the load
allows. Then the ratios, pair by pair (each two-actor run against the one-actor run before it).
`LOG_MONITORS=off` starts the nodes without their log monitors (`ray start
--include-log-monitor false`), which forward the workers' output to a driver that does not
print it here.

Usage: python crates/bge-m3-python/bench/ray_scaling.py MODEL_DIR [RUNS] [DOCS]
e.g.   target/python-venv/bin/python crates/bge-m3-python/bench/ray_scaling.py /tmp/bge-m3-full 3 48

`--colbert-cost` (MODEL_DIR [RUNS] [DOCS]) measures instead what the example's Encoder pays for
its token counts: the CPU time of `encode` with and without the ColBERT vectors, alternately.
(a release build of the package: pip install ./crates/bge-m3-python; `ray[data]` installed)
"""

import importlib.util
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray on the loopback address only (it otherwise picks the machine's own address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ray_encode.py"
spec = importlib.util.spec_from_file_location("ray_encode", EXAMPLE)
ray_encode = importlib.util.module_from_spec(spec)
sys.modules["ray_encode"] = ray_encode
spec.loader.exec_module(ray_encode)
# The workers do not have the example on their path: its functions travel by value.
ray.cloudpickle.register_pickle_by_value(ray_encode)


@ray.remote(num_cpus=0)
class Stats:
    """What each actor reports after each batch: its pid -> (cpu, tokens, first start, last end)."""

    def __init__(self):
        self.by_pid = {}

    def add(self, pid, cpu, tokens, start, end):
        old = self.by_pid.get(pid, (0.0, 0, start, end))
        self.by_pid[pid] = (old[0] + cpu, old[1] + tokens, min(old[2], start), max(old[3], end))

    def get(self):
        return self.by_pid


class TimedEncoder(ray_encode.Encoder):
    def __init__(self, stats_name, **kwargs):
        super().__init__(**kwargs)
        self.stats = ray.get_actor(stats_name)

    def __call__(self, batch):
        start, cpu = time.time(), time.process_time()
        table = super().__call__(batch)
        cpu = time.process_time() - cpu
        tokens = sum(table.column("tokens").to_pylist())
        ray.get(self.stats.add.remote(os.getpid(), cpu, tokens, start, time.time()))
        return table


def corpus(path: Path, docs: int) -> None:
    """crates/bge-m3-encode/bench/shards.sh's corpus: 10 to 60 words, seed 27."""
    random.seed(27)
    words = ("vector search hybrid lexical dense the of retrieval passage query index embedding "
             "multilingual Qdrant BM25 sparse colbert shard manifest corpus").split()
    with open(path, "w") as f:
        for i in range(docs):
            text = " ".join(random.choice(words) for _ in range(random.randint(10, 60)))
            f.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")


def own_sessions() -> tuple:
    """A cluster of three raylets on this machine started by `ray start`, each in a session of
    its own (as on separate machines: Linux's autogroup scheduling otherwise gives the
    processes of one session one share of a busy machine between them): a head with one CPU
    for the read and write tasks, and two worker nodes with one CPU and one `encoder` each.
    Returns its address and the session ids, to stop it with `stop`."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_cli = str(Path(sys.executable).parent / "ray")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1",
              "--object-store-memory", str(200 << 20), "--disable-usage-stats"]
    if os.environ.get("LOG_MONITORS", "on") == "off":
        # Each node's log monitor forwards its workers' output to the driver, which this
        # script does not print (`log_to_driver=False`): three processes at about 1.2% of a
        # core each on the two cores the actors need.
        common += ["--include-log-monitor", "false"]
    commands = [[ray_cli, "start", "--head", "--port", str(port), "--include-dashboard",
                 "false", *common]]
    commands += [[ray_cli, "start", "--address", f"127.0.0.1:{port}", "--resources",
                  '{"encoder": 1}', *common]] * 2
    sessions = []
    for command in commands:
        # `ray start` refuses a second node with the variable at 0: its --node-ip-address
        # keeps it on the loopback address instead.
        # Token authentication, on by default for `ray start`, is off: the three nodes and
        # the driver are this script's, on the loopback address.
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled"}
        start = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                                 env=env)
        sessions.append(start.pid)
        if start.wait() != 0:
            stop(sessions)
            sys.exit(f"{' '.join(command)}: status {start.returncode}")
    return f"127.0.0.1:{port}", sessions


def processes(sessions: list):
    """The pids of the processes whose session is one of `sessions`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) in sessions:
                    yield int(entry)
            except OSError:
                pass  # ended meanwhile


def stop(sessions: list) -> None:
    """Ends every process of `sessions` (those `own_sessions` started)."""
    for pid in processes(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def session_cpu(sessions: list) -> dict:
    """pid -> CPU seconds (user + system) so far of this process and of every process in
    `sessions`."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in {os.getpid(), *processes(sessions)}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass  # ended meanwhile
    return found


def run(model: str, path: Path, out: Path, actors: int, number: int, placed: bool,
        sessions: list) -> dict:
    name = f"stats-{number}"
    stats = Stats.options(name=name).remote()
    _, args = ray_encode.arguments([str(path), "-o", str(out), "--model", model, "--actors",
                                    str(actors), "--cpus-per-actor", "1", "--batch-size", "4"])
    # Batches of 4 texts, so that the second actor gets its share of 48 passages.
    ranges = ray_encode.plan([str(path)], 4, ray_encode.MAX_TEXT_CHARS)
    before = session_cpu(sessions)
    started = time.monotonic()
    resources = {"encoder": 1} if placed else None
    ds = ray_encode.pipeline(ranges, ["dense", "sparse"], resources, args, encoder=TimedEncoder,
                             encoder_kwargs={"stats_name": name})
    ds.write_parquet(str(out))
    wall = time.monotonic() - started
    after = session_cpu(sessions)
    by_pid = ray.get(stats.get.remote())
    ray.kill(stats)
    tokens = sum(t for _, t, _, _ in by_pid.values())
    cpu = sum(c for c, _, _, _ in by_pid.values())
    # Everything else of the cluster and the driver: what Ray itself takes from the cores the
    # actors run on (processes that ended during the run are missed: the tasks' workers stay).
    ray_cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in by_pid)
    span = max(e for _, _, _, e in by_pid.values()) - min(s for _, _, s, _ in by_pid.values())
    return {"actors": actors, "processes": len(by_pid), "wall": wall, "tokens": tokens,
            "tokens_per_s": tokens / wall, "encode_tokens_per_s": tokens / span, "cpu": cpu,
            "tokens_per_cpu_s": tokens / cpu, "ray_cores": ray_cpu / wall}


def colbert_cost(model: str, docs: int, runs: int) -> None:
    """What asking for the ColBERT vectors (for the token counts) costs the Encoder: the CPU
    time of `encode` with dense and sparse, against dense, sparse and ColBERT, alternately, in
    this process, one thread."""
    from bge_m3 import BGEM3FlagModel

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "corpus.jsonl"
        corpus(path, docs)
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    m = BGEM3FlagModel(model, threads=1, show_progress_bar=False)
    cpu = {False: [], True: []}
    for i in range(2 * runs):
        colbert = bool(i % 2)
        start = time.process_time()
        m.encode(texts, batch_size=8, max_length=8192, return_dense=True, return_sparse=True,
                 return_colbert_vecs=colbert)
        cpu[colbert].append(time.process_time() - start)
        print(f"run {i}: colbert {colbert}: {cpu[colbert][-1]:.2f} CPU s", flush=True)
    ratios = [b / a for a, b in zip(cpu[False], cpu[True])]
    print(f"with colbert / without: median {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f})")


def main() -> None:
    if "--colbert-cost" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--colbert-cost"]
        return colbert_cost(args[0], int(args[2]) if len(args) > 2 else 48,
                            int(args[1]) if len(args) > 1 else 3)
    model = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    docs = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    own = os.environ.get("SESSIONS", "own") == "own"
    if own:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        address, sessions = own_sessions()
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": a new cluster even where `ray start` left the address of one (own sessions).
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "corpus.jsonl"
        corpus(path, docs)
        for i in range(2 * runs):
            actors = 1 + i % 2
            load = os.getloadavg()[0]
            r = run(model, path, Path(work) / f"out-{i}", actors, i, own,
                    sessions if own else [os.getsid(0)])
            r["load"] = load
            results.append(r)
            print(f"run {i}: {actors} actor(s) ({r['processes']} encoded), load {load:.1f}: "
                  f"{r['tokens']} tokens in {r['wall']:.1f} s, {r['tokens_per_s']:.1f} tokens/s, "
                  f"encode {r['encode_tokens_per_s']:.1f} tokens/s, cpu {r['cpu']:.1f} s, "
                  f"{r['tokens_per_cpu_s']:.0f} tokens/cpu_s, Ray's own processes and the driver "
                  f"{r['ray_cores']:.2f} cores", flush=True)
    ray.shutdown()
    if own:
        stop(sessions)
    pairs = list(zip(results[0::2], results[1::2]))
    for key in ("tokens_per_s", "encode_tokens_per_s"):
        ratios = [two[key] / one[key] for one, two in pairs]
        print(f"{key}: two/one median {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    for actors in (1, 2):
        own = [r for r in results if r["actors"] == actors]
        print(f"{actors} actor(s): tokens/s median "
              f"{statistics.median(r['tokens_per_s'] for r in own):.1f} "
              f"({min(r['tokens_per_s'] for r in own):.1f}-"
              f"{max(r['tokens_per_s'] for r in own):.1f}), tokens/cpu_s median "
              f"{statistics.median(r['tokens_per_cpu_s'] for r in own):.0f}, Ray's own "
              f"processes and the driver median {statistics.median(r['ray_cores'] for r in own):.2f}"
              " cores")


if __name__ == "__main__":
    main()
