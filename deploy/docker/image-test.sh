#!/usr/bin/env bash
# Builds the CPU image (Dockerfile) for real where no image registry is reachable, runs it on
# the fixture model and checks it against the plain binary:
#
#   1. two local bases made with debootstrap from Debian 12's packages (bookworm, the mirror
#      of this machine's apt sources): the runtime base (minbase, 81 MB unpacked) and the
#      builder base (minbase + gcc, libc6-dev, ca-certificates, with the host's Rust 1.95
#      toolchain copied in: bin/cargo, bin/rustc and lib/ of
#      ~/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu, no docs; and the host's CA
#      bundle, which is what this machine's package registries are trusted with);
#   2. `podman build` of the Dockerfile with those bases as BUILDER_IMAGE and RUNTIME_IMAGE
#      (Docker format, so that its HEALTHCHECK is kept; the build reaches crates.io through
#      the host's network);
#   3. the plain binary (`cargo build --release -p bge-m3-server`) on one loopback port and the
#      image on another, both on fixtures/models/tiny-pt (in the container: mounted read-only
#      at /model, MODEL_PATH=/model; read-only root, /tmp a tmpfs, no capabilities, as the
#      Kubernetes manifests run it);
#   4. checks: /health 200 from the container, the image's HEALTHCHECK passes, the same
#      /embeddings request (dense, sparse and ColBERT) answered equal by both within 1e-5, the
#      server process running as uid 10001, `sleep` in the image for Kubernetes' preStop hook,
#      then `podman stop -t 45` (SIGTERM, SIGKILL only after 45 s, above the 30 s drain): the
#      exit status 0, the drain's log lines, no kill.
#
# Running containers here needs Debian's runc (crun refuses this machine's hybrid cgroups)
# and a containers.conf with `default_ulimits = []` (setting rlimits is not permitted here),
# passed through CONTAINERS_CONF; both are set up below. podman, runc and debootstrap are
# installed with apt-get if missing.
#
# Time cost, measured 2026-12-01 on the 2-core development machine (README, "Container
# images"): from nothing 2,379 s under other builds' load (debootstraps 578 + 396 s, the
# image's build 931 s, the plain binary's 471 s); with the bases kept and the image rebuilt in
# full 404 s; nothing changed 7 s. The image: 102 MB. Too slow for CI's fresh clone, so CI runs
# only deploy/docker/lint.sh; run this by hand:
#
#     bash deploy/docker/image-test.sh           # keeps the bases and caches for a rerun
#     bash deploy/docker/image-test.sh --clean   # removes every image, container and rootfs it made
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

work=target/image-test
image=localhost/bge-m3-server:image-test
runtime_base=localhost/bge-m3-image-test-runtime:bookworm
builder_base=localhost/bge-m3-image-test-builder:bookworm
container=bge-m3-image-test
toolchain=${RUST_TOOLCHAIN_DIR:-$HOME/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu}

# Every image this script makes carries this label, so that --clean removes ours only.
label=org.bge-m3-server.image-test=1

if [ "${1:-}" = --clean ]; then
    podman rm -f "$container" >/dev/null 2>&1 || true
    podman images -q --filter "label=$label" | sort -u | xargs -r podman rmi -f >/dev/null
    podman rmi -f "$builder_base" "$runtime_base" >/dev/null 2>&1 || true
    # $work holds the rootfs trees, the .deb cache and the build's cache mounts (TMPDIR).
    rm -rf "$work"
    echo "image test: removed its images, container and $work"
    exit 0
fi

start=$SECONDS
step() { echo "== [$((SECONDS - start)) s] $*"; }
fail() { echo "image test: FAIL: $*" >&2; exit 1; }

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$toolchain/bin/rustc" ] || fail "no Rust toolchain at $toolchain"
"$toolchain/bin/rustc" --version | grep -q '^rustc 1\.95\.' || fail "$toolchain is not Rust 1.95"

mkdir -p "$work"
export CONTAINERS_CONF=$repo/$work/containers.conf
printf '[containers]\n# Setting rlimits is not permitted on this machine.\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
# Debian 12's apt sources name the mirror in deb822 form (URIs: ...).
mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}')
mirror=${mirror:-http://deb.debian.org/debian}

# --- 1. the bases ---------------------------------------------------------------------------
rootfs() { # DIR [PACKAGES]: a Debian 12 minbase tree, made once and kept under $work
    local dir=$1 include=${2:-}
    if [ ! -f "$dir/.complete" ]; then
        rm -rf "$dir"
        debootstrap --variant=minbase ${include:+--include=$include} --cache-dir="$repo/$work/debs" \
            bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -20 "$dir.log"; fail "debootstrap $dir"; }
        # What an image does not need: the package lists, caches, docs, man pages and
        # message translations (33 MB; C.UTF-8 is built into glibc).
        rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* \
            "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
        touch "$dir/.complete"
    fi
}
import() { # DIR IMAGE [--change ...]: the tree as a one-layer image
    local dir=$1 name=$2
    shift 2
    podman image exists "$name" && return 0
    tar --exclude=./.complete -C "$dir" -c . | podman import --quiet --change "LABEL $label" "$@" - "$name" >/dev/null
}
mkdir -p "$work/debs"
step "runtime base: debootstrap --variant=minbase bookworm $mirror"
rootfs "$work/runtime-rootfs"
import "$work/runtime-rootfs" "$runtime_base"

step "builder base: minbase + gcc, libc6-dev, ca-certificates + the host's Rust $("$toolchain/bin/rustc" --version | cut -d' ' -f2)"
builder=$work/builder-rootfs
if [ ! -f "$builder/.complete" ]; then
    rootfs "$builder" gcc,libc6-dev,ca-certificates
    rm "$builder/.complete"
    mkdir -p "$builder/usr/local/rust/bin" "$builder/usr/local/cargo"
    cp -a "$toolchain/bin/cargo" "$toolchain/bin/rustc" "$builder/usr/local/rust/bin/"
    cp -a "$toolchain/lib" "$builder/usr/local/rust/"
    cp -L /etc/ssl/certs/ca-certificates.crt "$builder/etc/ssl/certs/ca-certificates.crt"
    touch "$builder/.complete"
fi
import "$builder" "$builder_base" \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo'
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep bge-m3-image-test

# --- 2. the image ---------------------------------------------------------------------------
step "podman build (Dockerfile, local bases)"
build_start=$SECONDS
old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
# TMPDIR: buildah keeps the RUN --mount=type=cache directories (cargo's registry and target/)
# under it, here in $work rather than in the machine's shared /var/tmp. --layers=false: no
# intermediate images left behind; the cache mounts make a rebuild incremental anyway.
mkdir -p "$work/tmp"
TMPDIR=$repo/$work/tmp nice -n 19 podman build --format docker --network host --layers=false \
    --label "$label" \
    --build-arg BUILDER_IMAGE="$builder_base" --build-arg RUNTIME_IMAGE="$runtime_base" \
    -t "$image" -f Dockerfile . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "podman build"; }
build_s=$((SECONDS - build_start))
new_id=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "built $image in $build_s s: $((size / 1000000)) MB ($(podman history --format '{{.Size}}' "$image" | head -3 | tr '\n' ' ')for its last layers)"

# --- 3. the plain binary and the container --------------------------------------------------
step "cargo build --release -p bge-m3-server (the plain binary)"
nice -n 19 cargo build --release --quiet -p bge-m3-server
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
plain_port=$(free_port)
image_port=$(free_port)
MODEL_PATH=fixtures/models/tiny-pt HOST=127.0.0.1 PORT=$plain_port \
    target/release/bge-m3-server >"$work/plain.log" 2>&1 &
plain_pid=$!
cleanup() {
    kill "$plain_pid" 2>/dev/null || true
    podman rm -f "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "podman --runtime runc run (read-only root, no capabilities, model mounted read-only)"
podman rm -f "$container" >/dev/null 2>&1 || true
# Without systemd here, podman cannot schedule the periodic HEALTHCHECK (it logs that); the
# check is run by hand below.
podman --runtime runc run -d --name "$container" \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    -p "127.0.0.1:$image_port:8101" \
    -v "$repo/fixtures/models/tiny-pt:/model:ro" -e MODEL_PATH=/model \
    "$image" >/dev/null 2>"$work/run.log" || { cat "$work/run.log"; fail "podman run"; }

wait_healthy() { # PORT: until /health answers 200, at most 60 s
    for _ in $(seq 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}
wait_healthy "$plain_port" || { cat "$work/plain.log"; fail "the plain binary never got healthy"; }
wait_healthy "$image_port" || { podman logs "$container"; fail "the container never got healthy"; }

# --- 4. the checks --------------------------------------------------------------------------
step "checks"
curl -s "http://127.0.0.1:$image_port/health"; echo
podman --runtime runc healthcheck run "$container" || fail "the image's HEALTHCHECK failed"
echo "HEALTHCHECK: healthy"

body='{"input": ["What is BGE M3?", "BM25 is a bag-of-words retrieval function", "Quelle est la capitale de la France ?"], "input_type": {"dense": true, "sparse": true, "colbert": true}}'
for port in "$plain_port" "$image_port"; do
    curl -sf -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$port/embeddings" >"$work/embeddings-$port.json" \
        || fail "POST /embeddings on $port"
done
python3 - "$work/embeddings-$plain_port.json" "$work/embeddings-$image_port.json" <<'EOF' || fail "the answers differ"
import json, sys

plain, image = (json.load(open(p)) for p in sys.argv[1:])
count = 0

def same(a, b, where):
    """Same structure and keys; numbers within 1e-5."""
    global count
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert abs(a - b) <= 1e-5, f"{where}: {a} != {b}"
        count += 1
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"

same(plain, image, "answer")
assert count > 0 and plain["colbert_vecs"], "nothing was compared"
print(f"/embeddings: image and plain binary agree on {count} numbers within 1e-5 (dense, sparse, ColBERT)")
EOF

pid=$(podman inspect --format '{{.State.Pid}}' "$container")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
gid=$(awk '/^Gid:/ {print $2}' "/proc/$pid/status")
[ "$uid" = 10001 ] && [ "$gid" = 10001 ] || fail "the server runs as uid $uid gid $gid, not 10001"
echo "server process $(tr '\0' ' ' <"/proc/$pid/cmdline")runs as uid $uid gid $gid"

# The Kubernetes preStop hook runs `sleep 5` in the container.
podman --runtime runc exec "$container" sleep 0 || fail "no sleep in the image for the preStop hook"
echo "preStop: sleep is there"

step "podman stop -t 45 (SIGTERM; SIGKILL only after 45 s)"
stop_start=$SECONDS
podman --runtime runc stop -t 45 "$container" >/dev/null
stop_s=$((SECONDS - stop_start))
status=$(podman inspect --format '{{.State.ExitCode}}' "$container")
podman logs "$container" >"$work/container.log" 2>&1
grep -E 'stopping|stopped' "$work/container.log" | cut -c1-200
[ "$status" = 0 ] || fail "exit status $status after SIGTERM, not 0"
grep -q 'stopping: answering the requests in flight' "$work/container.log" || fail "no drain log line"
grep -q 'stopped; every request was answered' "$work/container.log" || fail "no graceful stop log line"
[ "$stop_s" -lt 45 ] || fail "the stop took $stop_s s: the container was killed"
echo "stopped in $stop_s s with exit status $status"
grep -q ERROR "$work/container.log" && fail "ERROR in the container's log"

echo "image test: passed in $((SECONDS - start)) s (image build $build_s s, image $((size / 1000000)) MB)"
