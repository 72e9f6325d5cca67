#!/usr/bin/env bash
# Compatibility with real clients, run against a live bge-m3-server on the tiny-pt fixture
# model, each as its own documentation (and our README) shows:
# - OpenAI's official Python SDK (openai_client.py) and the original service's README code
#   (seed_client.py);
# - LangChain's OpenAIEmbeddings (langchain_client.py);
# - LlamaIndex's OpenAILikeEmbedding, TextEmbeddingsInference and
#   HuggingFaceInferenceAPIEmbedding (llamaindex_client.py);
# - huggingface_hub's InferenceClient at the server's root URL (huggingface_hub_client.py);
# - Haystack 3.x: huggingface-api-haystack's dense and sparse TEI embedders into
#   qdrant-haystack's document store in hybrid mode, and its TEI ranker (haystack_stack.py);
# - the Jina rerank wrappers of LangChain, LlamaIndex and Haystack, and LlamaIndex's TEI
#   rerank (rerank_wrappers.py);
# - qdrant-client in local mode with a hybrid query (qdrant_stack.py);
# - pymilvus with Milvus Lite and a hybrid search (milvus_stack.py);
# - pgvector's Python package reading the sparsevec literal (pgvector_literal.py);
# - the cohere SDK's rerank (cohere_client.py).
#
# Creates (or reuses) a virtualenv under target/clients-venv with the pinned packages of
# requirements.txt (every dependency pinned by constraints.txt; no torch), builds the server,
# starts it on a free port with its default settings and a second one with an API key (the
# scripts that check how a client sends its key get KEYED_URL and API_KEY), waits for /health
# (at most 120 s each), runs every script and the README's curl calls, and always stops both
# servers on exit. Exits non-zero on any failure; the last line reads
# `clients: N passed, M failed`, and the time the install and the run took is printed before it.
#
# Environment: PYTHON (default python3) makes the virtualenv; PROFILE (default dev, the profile
# `cargo test` already built) or release picks the server build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
HERE="$ROOT/crates/bge-m3-server/tests/clients"
cd "$ROOT"

VENV="$ROOT/target/clients-venv"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
install_start=$SECONDS
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
install_seconds=$((SECONDS - install_start))

PROFILE="${PROFILE:-dev}"
cargo build --quiet --profile "$PROFILE" -p bge-m3-server
if [ "$PROFILE" = dev ]; then BIN="$ROOT/target/debug/bge-m3-server"; else BIN="$ROOT/target/$PROFILE/bge-m3-server"; fi

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
PORT="$(free_port)"
BASE_URL="http://127.0.0.1:$PORT"
LOG="$ROOT/target/clients-server.log"
KEYED_PORT="$(free_port)"
while [ "$KEYED_PORT" = "$PORT" ]; do KEYED_PORT="$(free_port)"; done
KEYED_URL="http://127.0.0.1:$KEYED_PORT"
KEYED_LOG="$ROOT/target/clients-server-keyed.log"
API_KEY="clients-test-key"

MODEL_PATH="$ROOT/fixtures/models/tiny-pt" HOST=127.0.0.1 PORT="$PORT" RUST_LOG=info \
    "$BIN" >"$LOG" 2>&1 &
SERVER_PID=$!
MODEL_PATH="$ROOT/fixtures/models/tiny-pt" HOST=127.0.0.1 PORT="$KEYED_PORT" API_KEY="$API_KEY" \
    RUST_LOG=info "$BIN" >"$KEYED_LOG" 2>&1 &
KEYED_PID=$!
stop_servers() {
    kill "$SERVER_PID" "$KEYED_PID" 2>/dev/null || true
    wait "$SERVER_PID" "$KEYED_PID" 2>/dev/null || true
}
trap stop_servers EXIT

# /health is public, so the keyed server answers it without the key too.
wait_healthy() {
    local pid="$1" url="$2" log="$3" deadline=$((SECONDS + 120))
    until curl -fsS "$url/health" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server at $url exited before it was healthy; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "the server at $url was not healthy after 120 s; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
wait_healthy "$SERVER_PID" "$BASE_URL" "$LOG"
wait_healthy "$KEYED_PID" "$KEYED_URL" "$KEYED_LOG"

passed=0
failed=0

# The README's curl calls, with its http://localhost:8101 pointed at this server.
check_curl() {
    local name="$1" path="$2" expected="$3" got
    got="$(curl -sS "$BASE_URL$path")" || got="curl failed"
    if "$VENV/bin/python" -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' "$got" "$expected" 2>/dev/null; then
        passed=$((passed + 1)); echo "PASS $name"
    else
        failed=$((failed + 1)); echo "FAIL $name: $got"
    fi
}
DIM="$(curl -sS "$BASE_URL/models/bge-m3" | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["embedding_dims"])')"
check_curl "curl /health" /health '{"status": "healthy", "model_loaded": true, "device": "cpu", "dtype": "float32"}'
check_curl "curl /models/bge-m3" /models/bge-m3 \
    "{\"id\": \"bge-m3\", \"object\": \"model\", \"embedding_dims\": $DIM, \"max_length\": 8192, \"sparse_dims\": 1202, \"colbert_dims\": $DIM, \"dtype\": \"float32\", \"capabilities\": {\"dense\": true, \"sparse\": true, \"colbert\": true}}"

# Each script ends with `NAME: N passed, M failed`; one that dies without it counts as a failure.
run_start=$SECONDS
MILVUS_DIR="$(mktemp -d "$ROOT/target/clients-milvus.XXXXXX")"
for script in seed_client.py openai_client.py langchain_client.py llamaindex_client.py \
    huggingface_hub_client.py qdrant_stack.py milvus_stack.py pgvector_literal.py cohere_client.py \
    haystack_stack.py rerank_wrappers.py; do
    echo "== $script"
    status=0
    output="$(BASE_URL="$BASE_URL" KEYED_URL="$KEYED_URL" API_KEY="$API_KEY" MILVUS_DB="$MILVUS_DIR/milvus.db" \
        "$VENV/bin/python" "$HERE/$script" 2>&1)" || status=$?
    echo "$output"
    summary="$(echo "$output" | grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1 || true)"
    if [ -z "$summary" ]; then
        failed=$((failed + 1))
        echo "FAIL $script ended without a summary (exit $status)"
        continue
    fi
    p="$(echo "$summary" | sed -E 's/.*: ([0-9]+) passed.*/\1/')"
    f="$(echo "$summary" | sed -E 's/.* ([0-9]+) failed$/\1/')"
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        failed=$((failed + 1))
        echo "FAIL $script exited $status"
    fi
done

rm -rf "$MILVUS_DIR"

if [ "$failed" -ne 0 ]; then
    echo "server logs: $LOG, $KEYED_LOG"
fi
echo "clients: install ${install_seconds} s, run $((SECONDS - run_start)) s"
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
