"""Process and machine measurements from Linux's /proc, shared by the harness and its workers.

Standard library only (numpy for the weight-read floor, imported there), so that every engine's
subprocess can import it without loading anything it would not load anyway.
"""

import os
import time


def read_status(pid: int) -> dict:
    """VmRSS and VmHWM of a process, in bytes, and its number of threads."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
            elif key == "Threads":
                values[key] = int(rest)
    return values


def reset_peak(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine() -> dict:
    """CPU model, cores, memory and the vector extensions the kernel reports."""
    model, flags = "", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": mem,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
    }


class Measure:
    """Wall time, CPU time, peak RSS and load around one run in process `pid`."""

    def __init__(self, pid: int):
        self.pid = pid

    def __enter__(self):
        self.peak_reset = reset_peak(self.pid)
        self.load_before = loadavg()
        self.cpu_before = cpu_seconds(self.pid)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.cpu = cpu_seconds(self.pid) - self.cpu_before
        self.peak = read_status(self.pid)["VmHWM"]
        self.load_after = loadavg()
        return False

    def record(self, tokens: int, **extra) -> dict:
        return {
            "seconds": self.seconds,
            "tokens": tokens,
            "tokens_per_s": tokens / self.seconds,
            "cpu_seconds": self.cpu,
            "cores_used": self.cpu / self.seconds,
            "peak_rss_bytes": self.peak,
            "peak_is_per_run": self.peak_reset,
            "loadavg_before": self.load_before,
            "loadavg_after": self.load_after,
            **extra,
        }


# The reductions timed by `weight_read_floor`, each reading every byte once. A float32 sum is
# the obvious one, but numpy's pairwise summation can cost more than the memory traffic on
# one core; an integer OR over 64-bit words does less per byte. The floor is the fastest.
FLOOR_READS = {
    "float32 add.reduce": ("float32", "add"),
    "uint64 bitwise_or.reduce": ("uint64", "bitwise_or"),
}


def weight_read_floor(nbytes: int, tries: int = 5) -> dict:
    """The time one core takes to read `nbytes` of memory once: the best of `tries` streaming
    reductions over a buffer of that size, filled beforehand (every page written, so that no
    read lands on the kernel's shared zero page), for each way of `FLOOR_READS`.

    numpy runs a reduction on the calling thread; to check it, the CPU time of the whole
    process over the wall time of all the reads is recorded, with the process's threads before
    and after: `single_threaded` is False when that ratio exceeds 1.1 or a thread appeared, and
    None when the reads took under 50 ms in all, too short for the ratio to tell."""
    import numpy as np

    nbytes -= nbytes % 8  # a whole number of 64-bit words
    buffer = np.empty(nbytes, dtype=np.uint8)
    buffer.view(np.float32)[:] = 1.0
    pid = os.getpid()
    threads = read_status(pid)["Threads"]
    reads, cpu_total, wall_total = {}, 0.0, 0.0
    for name, (dtype, ufunc) in FLOOR_READS.items():
        view = buffer.view(dtype)
        reduce = getattr(np, ufunc).reduce
        runs = []
        for _ in range(tries):
            cpu = time.process_time()
            start = time.perf_counter()
            reduce(view)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu
            runs.append(wall)
            cpu_total += cpu
            wall_total += wall
        reads[name] = {"best_seconds": min(runs), "seconds": runs}
    threads_after = read_status(pid)["Threads"]
    del buffer
    fastest = min(reads, key=lambda n: reads[n]["best_seconds"])
    seconds = reads[fastest]["best_seconds"]
    cpu_over_wall = cpu_total / wall_total
    if threads_after > threads or (wall_total >= 0.05 and cpu_over_wall > 1.1):
        single = False
    else:
        single = True if wall_total >= 0.05 else None
    return {
        "bytes": nbytes,
        "seconds": seconds,
        "bytes_per_s": nbytes / seconds,
        "method": fastest,
        "reads": reads,
        "cpu_over_wall": cpu_over_wall,
        "process_threads": [threads, threads_after],
        "single_threaded": single,
    }

