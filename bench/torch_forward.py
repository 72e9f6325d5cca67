"""PyTorch twin of `examples/forward.rs`: times the raw forward pass of transformers'
XLMRobertaModel (`sdpa` attention, `torch.inference_mode()`) on the same seeded batches, and
prints one JSON line with tokens per second and peak memory: on the CPU in fp32 with one thread
per core by default, or on a GPU (`--device cuda --dtype fp16`), synchronised before each clock
reading, with the peak of `torch.cuda.max_memory_allocated`.

    fixtures/.venv/bin/python bench/torch_forward.py --model /tmp/bge-m3-full --batch 4 --len 512
    python3 bench/torch_forward.py --model DIR --device cuda --dtype fp16 --batch 32 --len 128
"""

import argparse
import json
import os
import time

import torch
from transformers import XLMRobertaModel

MASK64 = (1 << 64) - 1
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=DTYPES, help="default fp32")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = XLMRobertaModel.from_pretrained(
        args.model, dtype=DTYPES[args.dtype], add_pooling_layer=False, attn_implementation="sdpa"
    ).eval().to(device)
    load_peak = peak_rss_mib()
    ids = random_sequences(args.batch, args.len, model.config.vocab_size, args.seed)
    input_ids = torch.tensor(ids, dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    reset_peak_rss()
    times = []
    cpu_start = None
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(input_ids=input_ids, attention_mask=attention_mask)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        cpu_start = os.times()
        for _ in range(args.iters):
            start = time.perf_counter()
            out = model(input_ids=input_ids, attention_mask=attention_mask)
            sync()
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
                "device": args.device,
                "dtype": args.dtype,
                "gpu_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "gpu_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
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
