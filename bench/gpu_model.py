"""Writes the random-weight encoder of a BGE-M3 model directory where it cannot be carried.

    python3 bench/gpu_model.py --small DIR --out OUT [--seed 3003]

`--small` holds the small files of a model made by `fixtures/generate.py` (config.json,
tokenizer.json, the fp16 heads, the tokenizer's side files); this script writes OUT with those
files and a `pytorch_model.bin` of the encoder's random weights in the published layout (a torch
zip pickle of `XLMRobertaModel`'s state dict, pooler included, fp32), drawn exactly as
`fixtures/generate.py` draws them from the same seed (3003 for the full-size model, the tiny
fixtures' seeds for them). The 2.3 GB full-size encoder is thus made on a GPU machine from 3 MB
of carried files; the heads are carried rather than redrawn because generate.py centres the
sparse bias on the model's mean hidden state.

It prints one JSON line: the file written, its size, the seconds taken and a SHA-256 of every
tensor's bytes in key order, which is the same here and there when the weights are.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))

SMALL_FILES = ("config.json", "tokenizer.json", "colbert_linear.pt", "sparse_linear.pt",
               "special_tokens_map.json", "tokenizer_config.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", required=True, help="directory of the small model files")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--seed", type=int, default=3003,
                        help="generate.py's seed of the model (default 3003, the full size)")
    args = parser.parse_args()

    import generate  # fixtures/generate.py: the weight initialisation of the fixtures
    from transformers import XLMRobertaConfig, XLMRobertaModel

    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    for name in SMALL_FILES:
        src = os.path.join(args.small, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(args.out, name))
    config = XLMRobertaConfig.from_pretrained(args.small)
    # The same calls, in the same order, as generate.build_model.
    torch.manual_seed(args.seed)
    model = XLMRobertaModel(config, add_pooling_layer=True).float().eval()
    gen = torch.Generator().manual_seed(args.seed)
    generate.init_weights(model, gen)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].numpy().tobytes())
    path = os.path.join(args.out, "pytorch_model.bin")
    torch.save(state, path)
    print(json.dumps({
        "written": path,
        "bytes": os.path.getsize(path),
        "seconds": time.perf_counter() - start,
        "tensors": len(state),
        "sha256": digest.hexdigest(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
