"""What parsing a 16 MiB JSON body of many short inputs costs, and what it does to another
request's latency on the same actix worker (issue 24, "the 16 MiB JSON body").

Starts each SERVER_BIN in turn on the tiny-pt fixture and sends it ROUNDS bodies of 16 MiB:
`{"input": [...]}` with 1.6 million texts of 2 to 8 characters. The server reads and
parses the whole body before it counts the texts, so each is answered `too_many_inputs`
without any model work: the request's time is the read and the parse. Meanwhile a second
client asks `GET /health` without pause on two keep-alive connections opened just after the
large one's, so that one of them is served by the same worker (actix hands connections to its
workers in turn). Prints one JSON line per binary: the large request's time (median), the
slowest `/health` answer during each large request (median of the rounds, and the worst), and
the slowest while idle; and the large request's time when it is sent alone, first.

    python3 bench/body_parse.py BEFORE_BIN AFTER_BIN [ROUNDS]

Binaries are run alternately (before, after, before, after...), ROUNDS (default 5) times
each, so that the machine's load falls on both alike. Linux or not; the standard library only.
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 16 << 20


def body():
    texts, size, i = [], 12, 0
    while True:
        text = f"w{i}"
        if size + len(text) + 3 > LIMIT:
            break
        texts.append(text)
        size += len(text) + 3
        i += 1
    data = json.dumps({"input": texts}, separators=(",", ":")).encode()
    assert len(data) <= LIMIT, len(data)
    return data, len(texts)


class Server:
    def __init__(self, binary):
        env = dict(
            os.environ,
            MODEL_PATH=os.path.join(ROOT, "fixtures/models/tiny-pt"),
            HOST="127.0.0.1",
            PORT="0",
            DEVICE="cpu",
            RUST_LOG="info",
        )
        env.pop("API_KEY", None)
        self.process = subprocess.Popen([binary], env=env, stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            if "listening" in line and "addr=" in line:
                self.port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
                break
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()
        while True:
            try:
                if self.get(self.connect(), "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    @staticmethod
    def get(connection, path):
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()

    def stop(self):
        self.process.kill()
        self.process.wait()


def slowest_health(connections, stop):
    """The slowest /health answer until `stop` is set, asked in turn on `connections`."""
    worst = 0.0
    while not stop.is_set():
        for connection in connections:
            start = time.perf_counter()
            status, _ = Server.get(connection, "/health")
            worst = max(worst, time.perf_counter() - start)
            assert status == 200, status
    return worst


def send_large(connection, data):
    """The large request's time to its answer."""
    start = time.perf_counter()
    connection.request("POST", "/embeddings", body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    took = time.perf_counter() - start
    assert answer["error"]["code"] == "too_many_inputs", answer
    return took


def one_round(server, data):
    # Alone first: the large request's read and parse with nothing else asked of the server.
    alone = server.connect()
    took_alone = send_large(alone, data)
    alone.close()
    large = server.connect()
    large.connect()
    health = [server.connect(), server.connect()]
    for connection in health:
        Server.get(connection, "/health")
    # Idle: the same /health loop for a second, nothing else running.
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    idle = slowest_health(health, stop)

    stop = threading.Event()
    result = {}
    poller = threading.Thread(target=lambda: result.update(worst=slowest_health(health, stop)))
    poller.start()
    took = send_large(large, data)
    stop.set()
    poller.join()
    for connection in [large] + health:
        connection.close()
    return took_alone, took, result["worst"], idle


def main():
    binaries = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    data, texts = body()
    runs = {binary: [] for binary in binaries}
    for _ in range(rounds):
        for binary in binaries:
            server = Server(binary)
            try:
                runs[binary].append(one_round(server, data))
            finally:
                server.stop()
    for binary, rounds_of in runs.items():
        alone, took, worst, idle = zip(*rounds_of)
        print(
            json.dumps(
                {
                    "binary": binary,
                    "body_mib": round(len(data) / (1 << 20), 2),
                    "texts": texts,
                    "rounds": len(took),
                    "large_request_alone_ms": round(statistics.median(alone) * 1e3),
                    "large_request_beside_health_ms": round(statistics.median(took) * 1e3),
                    "slowest_health_ms_median": round(statistics.median(worst) * 1e3, 1),
                    "slowest_health_ms_worst": round(max(worst) * 1e3, 1),
                    "slowest_health_idle_ms": round(max(idle) * 1e3, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
