"""PyTorch twin of `examples/forward.rs`: times the raw forward pass of transformers'
XLMRobertaModel (fp32, CPU, one thread per core) on the same seeded batches, and prints one
JSON line with tokens per second and peak resident memory.

    fixtures/.venv/bin/python bench/torch_forward.py --model /tmp/bge-m3-full --batch 4 --len 512
"""

import argparse
import json
import os
import time

import torch
from transformers import XLMRobertaModel

MASK64 = (1 << 64) - 1


def random_sequences(batch, length, vocab, seed):
    """The same ids as `random_sequences` in examples/forward.rs (a 64-bit LCG)."""
    mul, inc = 6364136223846793005, 1442695040888963407
    state = (seed * mul + inc) & MASK64
    span = vocab - 5
    out = []
    for _ in range(batch):
        seq = [0]
        for _ in range(max(length - 2, 0)):
            state = (state * mul + inc) & MASK64
            seq.append(4 + (state >> 33) % span)
        seq.append(2)
        out.append(seq)
    return out


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = XLMRobertaModel.from_pretrained(
        args.model, torch_dtype=torch.float32, add_pooling_layer=False
    ).eval()
    load_peak = peak_rss_mib()
    ids = random_sequences(args.batch, args.len, model.config.vocab_size, args.seed)
    input_ids = torch.tensor(ids, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)

    reset_peak_rss()
    times = []
    cpu_start = None
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(input_ids=input_ids, attention_mask=attention_mask)
        cpu_start = os.times()
        for _ in range(args.iters):
            start = time.perf_counter()
            out = model(input_ids=input_ids, attention_mask=attention_mask)
            times.append(time.perf_counter() - start)
            del out
    cpu_end = os.times()
    cpu = (cpu_end.user + cpu_end.system) - (cpu_start.user + cpu_start.system)
    tokens = args.batch * args.len
    print(
        json.dumps(
            {
                "impl": "torch",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "attn": model.config._attn_implementation,
                "batch": args.batch,
                "len": args.len,
                "tokens": tokens,
                "iters": args.iters,
                "seconds": times,
                "cpu_seconds": cpu,
                "tokens_per_s": tokens * args.iters / sum(times),
                "best_tokens_per_s": tokens / min(times),
                "peak_rss_mib": peak_rss_mib(),
                "load_peak_rss_mib": load_peak,
            }
        )
    )


if __name__ == "__main__":
    main()
