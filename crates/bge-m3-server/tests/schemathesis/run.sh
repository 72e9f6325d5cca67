#!/usr/bin/env bash
# A bounded schemathesis pass against the live server's /openapi.json, on the tiny-pt fixture
# model: requests generated from the document (valid and invalid), every answer checked against
# it (status codes, content types, headers, response schemas; valid data accepted, invalid data
# refused; no 5xx). schemathesis.toml beside this script lists the one exception.
#
# Creates (or reuses) a virtualenv under target/schemathesis-venv with the pinned schemathesis of
# requirements.txt, builds the server, starts it on a free port, waits for /health (at most
# 120 s), runs schemathesis with at most ST_MAX_EXAMPLES (default 100) examples per operation in
# its deterministic mode, and always stops the server on exit. Exits non-zero on any failure.
#
# Environment: PYTHON (default python3) makes the virtualenv; PROFILE (default dev) or release
# picks the server build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
HERE="$ROOT/crates/bge-m3-server/tests/schemathesis"
cd "$ROOT"

VENV="$ROOT/target/schemathesis-venv"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"

PROFILE="${PROFILE:-dev}"
cargo build --quiet --profile "$PROFILE" -p bge-m3-server
if [ "$PROFILE" = dev ]; then BIN="$ROOT/target/debug/bge-m3-server"; else BIN="$ROOT/target/$PROFILE/bge-m3-server"; fi

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE_URL="http://127.0.0.1:$PORT"
LOG="$ROOT/target/schemathesis-server.log"

MODEL_PATH="$ROOT/fixtures/models/tiny-pt" HOST=127.0.0.1 PORT="$PORT" DEVICE=cpu RUST_LOG=info \
    "$BIN" >"$LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
trap stop_server EXIT

deadline=$((SECONDS + 120))
until curl -fsS "$BASE_URL/health" >/dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "the server was not healthy; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.1
done

cd "$ROOT/target"
status=0
"$VENV/bin/st" --config-file "$HERE/schemathesis.toml" run "$BASE_URL/openapi.json" \
    --max-examples "${ST_MAX_EXAMPLES:-100}" --generation-deterministic --request-timeout 60 \
    --no-color || status=$?
if grep -q ' ERROR \|panicked' "$LOG"; then
    echo "the server logged errors:" >&2
    grep ' ERROR \|panicked' "$LOG" | head -20 >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    echo "schemathesis: FAILED (server log: $LOG)"
else
    echo "schemathesis: no failed check"
fi
exit "$status"
