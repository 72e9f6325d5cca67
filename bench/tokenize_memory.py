"""A large /tokenize beside a short /embeddings, on one server binary (issue 29, item 2).

Starts SERVER_BIN on the tiny-pt fixture (one tokenizer thread, other settings default), sends
the issue's /tokenize of 16 texts of "a " x 500,000 (15 MiB, 8 million tokens) and reads its
whole answer; once the /tokenize is admitted (`bge_m3_queued_requests` >= 1), a 2-word
/embeddings is sent beside it. Prints one JSON line: the short request's latency, the
/tokenize's time to its answer's first and last byte, the server's RSS before, its peak
(VmHWM) and what it keeps 10 s after the answer.

    python3 bench/tokenize_memory.py target/debug/bge-m3-server

Run it on two builds (the commit before and after a change) to compare them; it needs Linux
(/proc) and nothing but the standard library.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def metric(base, name):
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def post(base, path, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=3600) as r:
        return r.status, r.read()


def main():
    binary = sys.argv[1]
    env = dict(
        os.environ,
        MODEL_PATH=os.path.join(ROOT, "fixtures/models/tiny-pt"),
        HOST="127.0.0.1",
        PORT="0",
        DEVICE="cpu",
        TOKENIZER_THREADS="1",
        REQUEST_TIMEOUT="3600",
        RUST_LOG="info",
    )
    env.pop("API_KEY", None)
    server = subprocess.Popen([binary], env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stderr:
            if "listening" in line and "addr=" in line:
                port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
                break
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        post(base, "/embeddings", {"input": "warm up"})
        rss_before = status_kib(server.pid, "VmRSS")
        with open(f"/proc/{server.pid}/clear_refs", "w") as f:
            f.write("5")

        body = json.dumps({"inputs": ["a " * 500_000] * 16}).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        sent = time.monotonic()
        sock.sendall(
            b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        while metric(base, "bge_m3_queued_requests") < 1:
            time.sleep(0.05)
        asked = time.monotonic()
        status, _ = post(base, "/embeddings", {"input": "two words"})
        short = time.monotonic() - asked
        assert status == 200

        first = None
        received = 0
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            if first is None:
                first = time.monotonic() - sent
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
            received += len(data)
        last = time.monotonic() - sent
        peak = status_kib(server.pid, "VmHWM")
        time.sleep(10)
        kept = status_kib(server.pid, "VmRSS")
        print(
            json.dumps(
                {
                    "binary": binary,
                    "short_embeddings_s": round(short, 2),
                    "tokenize_first_byte_s": round(first, 1),
                    "tokenize_last_byte_s": round(last, 1),
                    "answer_mb": round(received / 1e6),
                    "rss_before_mib": round(rss_before / 1024),
                    "peak_over_before_mib": round((peak - rss_before) / 1024),
                    "kept_10s_after_mib": round((kept - rss_before) / 1024),
                }
            )
        )
    finally:
        server.kill()


if __name__ == "__main__":
    main()
