#!/usr/bin/env bash
# The Python package's tests, as CI runs them (.ci/run): a virtualenv with the pinned test
# packages (requirements.txt, constraints.txt; no torch), the package built from this checkout
# and installed by pip as a user would (`pip install ./crates/bge-m3-python`, maturin, here
# with cargo's dev profile so that the build reuses what `cargo test` compiled), then pytest.
# The tests against a server use the bge-m3-server debug build, and the Ray tests compare with
# the bge-m3-encode debug build (both built here if missing).
#
# Environment: PYTHON (default python3) makes the virtualenv, kept in target/python-venv.
# Prints the seconds each part took; pytest's own summary is the last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
HERE="$ROOT/crates/bge-m3-python/tests"
cd "$ROOT"

VENV="$ROOT/target/python-venv"
start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
install_seconds=$((SECONDS - start))

start=$SECONDS
# --no-build-isolation: the pinned maturin above builds it (no other download); the dev
# profile: FlagEmbedding-level numerics do not need the release build, the test time does not
# either, and cargo test has compiled most of it already.
# maturin's build hook runs the `maturin` found on PATH: the virtualenv's.
PATH="$VENV/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" "$VENV/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps \
    ./crates/bge-m3-python
build_seconds=$((SECONDS - start))
if "$VENV/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
    echo "torch is importable in $VENV: the tests must run without it" >&2
    exit 1
fi

cargo build --quiet -p bge-m3-server -p bge-m3-encode
echo "python package: install of the test packages ${install_seconds} s, build and install of bge_m3 ${build_seconds} s"
BGE_M3_SERVER="$ROOT/target/debug/bge-m3-server" BGE_M3_ENCODE="$ROOT/target/debug/bge-m3-encode" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    "$HERE"
