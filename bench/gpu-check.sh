#!/usr/bin/env bash
# The GPU check, in one command on a borrowed GPU machine (no network, a 64 MiB carried tree,
# minutes of GPU time), with everything built beforehand on a machine without a GPU.
#
#   bash bench/gpu-check.sh --prepare    # here: build the cuda binaries, stage what travels
#   bash bench/gpu-check.sh --dry-run    # here: check the stage and the model generator
#   bash bench/gpu-check.sh              # there: run the check, results under $OUT
#
# --prepare builds, with the CUDA toolkit of scripts/cuda-env.sh (CUDA_COMPUTE_CAP, default 90,
# and CUDA_TOOLKIT_VERSION, default 13.0.2), the release `cuda` builds of the GPU parity test
# (crates/bge-m3-core/tests/gpu.rs), `examples/forward` and the server into target/cuda, strips
# them into target/gpu-check/bin, copies the small files of the full-size random model
# ($MODEL, default /tmp/bge-m3-full: config, tokenizer, heads) into target/gpu-check/model, and
# prints what the carried tree weighs: the tracked files plus target/gpu-check, which the
# device call names in `carry`. It fails if any PTX file candle's kernels compiled to declares
# an ISA newer than the oldest driver the build is meant for (9.0 = CUDA 13.0, see the README).
#
# The run, on the GPU machine (driver and PyTorch with the CUDA 13 runtime libraries as Python
# packages, transformers): fails at once, with what is missing, without a driver, a GPU, torch
# with CUDA, the runtime libraries or the staged binaries; sets LD_LIBRARY_PATH to the
# libraries' folders in PyTorch's site-packages; then
#   1. the GPU parity test: every fixture case on cuda:0 in f16, bf16 and f32 against the CPU;
#   2. the full-size random encoder, drawn with torch from generate.py's seed (bench/gpu_model.py);
#   3. examples/forward against PyTorch's raw forward in fp16 on 32x128, 8x512 and 1x8192
#      tokens, and the server end to end (bench/gpu_check.py).
# Everything goes to $OUT (default target/gpu-check-out): gpu-check.json (the summary), the
# parity log, forward.jsonl, server.json and the logs. About 5 minutes on an H200.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$ROOT/target/gpu-check"
# Newest PTX ISA the build may emit: the driver JIT-compiles the PTX and refuses newer ISAs.
MAX_PTX_ISA="${MAX_PTX_ISA:-9.0}"

fail() {
    echo "gpu-check: $*" >&2
    exit 1
}

# Every PTX file of candle's kernels in TARGET_DIR must declare an ISA <= MAX_PTX_ISA.
check_ptx() {
    local target_dir="$1" files versions newest
    files=$(find "$target_dir/" -path '*/build/candle-kernels-*/out/*.ptx' 2>/dev/null)
    [ -n "$files" ] || fail "no PTX of candle-kernels under $target_dir: was --features cuda built?"
    versions=$(grep -h '^\.version' $files | awk '{print $2}' | sort -uV)
    newest=$(echo "$versions" | tail -1)
    echo "PTX ISA of candle's kernels: $(echo $versions) (at most $MAX_PTX_ISA allowed)"
    if [ "$(printf '%s\n%s\n' "$newest" "$MAX_PTX_ISA" | sort -V | tail -1)" != "$MAX_PTX_ISA" ]; then
        fail "PTX ISA $newest is newer than $MAX_PTX_ISA: drivers older than its CUDA version refuse it (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); build with an older toolkit (scripts/cuda-env.sh)"
    fi
}

prepare() {
    local model="${MODEL:-/tmp/bge-m3-full}" target="$ROOT/target/cuda" test_bin
    [ -f "$model/config.json" ] || fail "no model at $model (fixtures/generate.py --full-size $model, or MODEL=DIR)"
    # shellcheck source=../scripts/cuda-env.sh
    source "$ROOT/scripts/cuda-env.sh" "${CUDA_COMPUTE_CAP:-90}" "${CUDA_TOOLKIT_VERSION:-13.0.2}"
    export CARGO_TARGET_DIR="$target"
    cd "$ROOT"
    # One cargo call builds the server, the examples and the tests in one feature set: built
    # apart, they unify features differently and compile candle's CUDA kernels again (some ten
    # minutes each on two cores).
    test_bin=$(cargo test --release --features cuda -p bge-m3-server -p bge-m3-core --no-run \
        --message-format=json | grep -o '"executable":"[^"]*/gpu-[^"]*"' | cut -d'"' -f4 | tail -1)
    [ -x "$test_bin" ] || fail "the GPU test binary was not built"
    check_ptx "$target"
    rm -rf "$STAGE"
    mkdir -p "$STAGE/bin" "$STAGE/model"
    # Stripped, the three binaries are some 165 MB (candle's kernels, PTX and sm_90a cubins,
    # are in each); xz brings them to about 27 MB, so that the carried tree fits in 64 MiB.
    local bin
    for bin in "gpu-test:$test_bin" "forward:$target/release/examples/forward" \
        "bge-m3-server:$target/release/bge-m3-server"; do
        strip -o "$STAGE/bin/${bin%%:*}" "${bin#*:}"
        xz -9 -T0 "$STAGE/bin/${bin%%:*}"
    done
    for f in config.json tokenizer.json colbert_linear.pt sparse_linear.pt \
        special_tokens_map.json tokenizer_config.json; do
        [ -f "$model/$f" ] && cp -L "$model/$f" "$STAGE/model/"
    done
    ls -l "$STAGE/bin" "$STAGE/model"
    report_size
}

# What a device call carries: the tracked files, the untracked ones git does not ignore, and
# target/gpu-check (named in `carry`).
report_size() {
    local tree stage
    cd "$ROOT"
    tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) \
        | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
    stage=$(du -sb "$STAGE" | cut -f1)
    echo "carried: tree $((tree / 1024)) KiB + target/gpu-check $((stage / 1024)) KiB = $(((tree + stage) / 1048576)) MiB of 64"
    [ $((tree + stage)) -le $((64 * 1048576)) ] || fail "the carried tree is over 64 MiB"
}

# Here, without a GPU: the stage is complete and fits, the generator redraws the committed
# tiny fixtures bit for bit (so a model it makes is the one FlagEmbedding's references were
# taken on), and the CPU build passes the parity test on the redrawn fixtures.
dry_run() {
    local python="${PYTHON:-$ROOT/fixtures/.venv/bin/python}" tmp
    [ -f "$STAGE/model/config.json" ] || fail "$STAGE/model is empty: run --prepare first"
    report_size
    # What the device does first: the binaries unpack to the executables that were built.
    unpack
    for bin in gpu-test forward bge-m3-server; do
        file "$STAGE/bin/$bin" | grep -q 'ELF 64-bit.*executable' \
            || fail "$STAGE/bin/$bin did not unpack to an executable"
        rm "$STAGE/bin/$bin"
    done
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    mkdir -p "$tmp/fixtures/models"
    cp -r "$ROOT/fixtures/expected" "$tmp/fixtures/"
    "$python" "$ROOT/bench/gpu_model.py" --small "$ROOT/fixtures/models/tiny-pt" \
        --out "$tmp/fixtures/models/tiny-pt" --seed 1001
    "$python" "$ROOT/bench/gpu_model.py" --small "$ROOT/fixtures/models/tiny-st" \
        --out "$tmp/fixtures/models/tiny-st" --seed 2002
    "$python" - "$ROOT/fixtures/models" "$tmp/fixtures/models" <<'EOF'
import sys, torch
from safetensors.torch import load_file
ours, theirs = sys.argv[2], sys.argv[1]
for name, file in (("tiny-pt", "pytorch_model.bin"), ("tiny-st", "model.safetensors")):
    a = torch.load(f"{ours}/{name}/pytorch_model.bin", weights_only=True)
    b = (torch.load if file.endswith(".bin") else load_file)(f"{theirs}/{name}/{file}")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    print(f"{name}: the generator redraws the committed weights bit for bit ({len(a)} tensors)")
EOF
    (cd "$ROOT" && BGE_M3_FIXTURES="$tmp/fixtures" cargo test --release -p bge-m3-core --test parity)
    echo "gpu-check --dry-run: ok"
}

# There: the libraries the cuda build loads, from PyTorch's site-packages.
find_libraries() {
    python3 - <<'EOF'
import glob, os, site, sys
need = ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libnvrtc.so.13"]
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
found = {}
for root in roots:
    for lib in need:
        for path in glob.glob(os.path.join(root, "nvidia", "**", lib), recursive=True):
            found.setdefault(lib, os.path.dirname(path))
missing = [lib for lib in need if lib not in found]
if missing:
    sys.exit("missing CUDA runtime libraries " + ", ".join(missing) + " (pip: nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cuda-nvrtc)")
print(":".join(sorted(set(found.values()))))
EOF
}

# Unpacks the staged binaries next to their .xz files (python's lzma: no xz needed there).
unpack() {
    python3 - "$STAGE/bin" <<'EOF' || fail "could not unpack the staged binaries"
import lzma, os, shutil, sys
for name in ("gpu-test", "forward", "bge-m3-server"):
    packed = os.path.join(sys.argv[1], name + ".xz")
    if not os.path.exists(packed):
        sys.exit(f"{packed} missing: run --prepare where it builds, and carry target/gpu-check")
    with lzma.open(packed) as src, open(os.path.join(sys.argv[1], name), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(os.path.join(sys.argv[1], name), 0o755)
EOF
}

run() {
    local out="${OUT:-$ROOT/target/gpu-check-out}" model="${GPU_MODEL_DIR:-/tmp/bge-m3-full}" libs
    mkdir -p "$out"
    command -v nvidia-smi >/dev/null || fail "no nvidia-smi: no NVIDIA driver on this machine"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        | tee "$out/gpu.txt" || fail "nvidia-smi found no GPU"
    python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no GPU")' \
        || fail "python3's torch has no usable CUDA"
    unpack
    libs=$(find_libraries) || fail "see above"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$out/env.txt"
    export PYTHONUNBUFFERED=1

    local start=$SECONDS parity=0
    echo "== 1. GPU parity test" >&2
    BGE_M3_FIXTURES="$ROOT/fixtures" timeout 300 "$STAGE/bin/gpu-test" --nocapture \
        >"$out/parity.log" 2>&1 || parity=$?
    tail -5 "$out/parity.log" >&2
    echo "== 2. the full-size random encoder" >&2
    python3 "$ROOT/bench/gpu_model.py" --small "$STAGE/model" --out "$model" | tee "$out/model.json"
    echo "== 3. forward against PyTorch, and the server" >&2
    python3 "$ROOT/bench/gpu_check.py" --stage "$STAGE" --model "$model" --out "$out" \
        >"$out/measure.json"
    python3 - "$out" "$parity" "$((SECONDS - start))" <<'EOF'
import json, sys
out, parity, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
summary = {
    "gpu": open(f"{out}/gpu.txt").read().strip(),
    "parity_test": "pass" if parity == 0 else f"FAIL (exit {parity}), see parity.log",
    "parity_worst": [l.strip() for l in open(f"{out}/parity.log") if "worst cosine" in l],
    "model": json.load(open(f"{out}/model.json")),
    **json.load(open(f"{out}/measure.json")),
    "seconds": seconds,
}
json.dump(summary, open(f"{out}/gpu-check.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
    [ "$parity" -eq 0 ] || fail "the GPU parity test failed (see $out/parity.log)"
}

case "${1:-}" in
    --prepare) prepare ;;
    --dry-run) dry_run ;;
    --check-ptx) check_ptx "${2:-$ROOT/target}" ;;
    "") run ;;
    *) fail "unknown argument $1 (--prepare, --dry-run, --check-ptx [TARGET_DIR], or none to run)" ;;
esac
