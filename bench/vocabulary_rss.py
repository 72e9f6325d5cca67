"""The server's resident memory once the full-size model is loaded, with a 250,002-piece
vocabulary (issue 24: the server read tokenizer.json a second time for /tokenize and /decode).

fixtures/generate.py --full-size writes the real model's shapes but the fixtures' tokenizer
(1,202 pieces), on which a second copy of the vocabulary would not show. This script makes
FULL-250k beside FULL: the same files (symbolic links) and a tokenizer.json whose Unigram
vocabulary is padded with seeded random pieces to BGE-M3's 250,002 ids, `<mask>` last, as in
the real one. It then starts each SERVER_BIN on it in turn, ROUNDS times, and prints one JSON
line per binary: the median VmRSS once /health answers 200 (warm page cache: the first round
of each binary is not counted).

    python3 bench/vocabulary_rss.py --model /tmp/bge-m3-full OLD_BIN NEW_BIN

Needs Linux (/proc) and nothing but the standard library.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import time
import urllib.request


def make_model(full, out):
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(full):
        if name != "tokenizer.json" and not os.path.exists(os.path.join(out, name)):
            os.symlink(os.path.join(full, name), os.path.join(out, name))
    with open(os.path.join(full, "tokenizer.json"), encoding="utf-8") as f:
        tokenizer = json.load(f)
    vocab = tokenizer["model"]["vocab"]
    mask = vocab.pop()
    assert mask[0] == "<mask>", mask
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzàéèüößçñ"
    seen = {piece for piece, _ in vocab}
    while len(vocab) < 250_001:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 10)))
        piece = ("▁" if rng.random() < 0.6 else "") + word
        if piece not in seen:
            seen.add(piece)
            vocab.append([piece, -12.0 - 4.0 * rng.random()])
    vocab.append(mask)
    for token in tokenizer["added_tokens"]:
        if token["content"] == "<mask>":
            token["id"] = len(vocab) - 1
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)


def loaded_rss_mib(binary, model):
    env = dict(
        os.environ, MODEL_PATH=model, HOST="127.0.0.1", PORT="0", DEVICE="cpu", RUST_LOG="info"
    )
    env.pop("API_KEY", None)
    server = subprocess.Popen([binary], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in server.stderr:
            if "listening" in line and "addr=" in line:
                port = int(line.split("addr=")[1].split()[0].rsplit(":", 1)[1])
                break
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        with open(f"/proc/{server.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    finally:
        server.kill()
        server.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="/tmp/bge-m3-full")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()
    model = args.model.rstrip("/") + "-250k"
    make_model(args.model, model)
    rss = {binary: [] for binary in args.binaries}
    for _ in range(args.rounds):
        for binary in args.binaries:
            rss[binary].append(loaded_rss_mib(binary, model))
    for binary, figures in rss.items():
        counted = figures[1:]
        print(
            json.dumps(
                {
                    "binary": binary,
                    "model": model,
                    "loaded_rss_mib_median": round(statistics.median(counted), 1),
                    "runs_mib": [round(x, 1) for x in figures],
                }
            )
        )


if __name__ == "__main__":
    main()
