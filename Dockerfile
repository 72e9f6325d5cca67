# syntax=docker/dockerfile:1
# bge-m3-server for the CPU. Build and run (see the README, "Container images"):
#
#     docker build -t bge-m3-server:0.1.0-cpu .
#     docker run -p 8101:8101 -v bge-m3-cache:/data bge-m3-server:0.1.0-cpu
#
# Both bases are build arguments, so that the image can be built from local bases where no
# registry is reachable (deploy/docker/image-test.sh makes them with debootstrap):
#   BUILDER_IMAGE  cargo and rustc 1.95 on PATH (the workspace's rust-version), gcc and the C
#                  library headers (ring builds C), CARGO_HOME=/usr/local/cargo;
#   RUNTIME_IMAGE  glibc 2.36 or later (the builder's, Debian 12), bash (for the health check)
#                  and useradd.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
ENV CARGO_HOME=/usr/local/cargo
WORKDIR /src
# rust-toolchain.toml is left out on purpose: rustup would try to download the components it
# lists (rustfmt, clippy) that a build does not need; the builder's own 1.95 is used.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
# Not built, but bge-m3-core's manifest names their files, so cargo wants them.
COPY examples examples
COPY benches benches
# The registry and target/ are cache mounts: a rebuild after a source change compiles only
# the workspace's crates. The binary is copied out of the mount in the same step.
# Without the release profile's line tables (and so cargo strips the debug info): 25 MB
# instead of 140 MB; panics still name their functions, not their lines.
ENV CARGO_PROFILE_RELEASE_DEBUG=false
# The corpus encoder ships beside the server, for the Kubernetes Indexed Job
# (deploy/kubernetes/encode-job) and `docker run --entrypoint bge-m3-encode`. Two cargo
# calls, so that the encoder's features of bge-m3-core do not change the server's build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bge-m3-server \
    && cargo build --release --locked -p bge-m3-encode \
    && cp target/release/bge-m3-server target/release/bge-m3-encode /usr/local/bin/

FROM ${RUNTIME_IMAGE}
# A fixed numeric user, so that Kubernetes' runAsNonRoot can verify it and volumes can be
# given to it (fsGroup 10001). /data is its home and the Hugging Face cache (HF_HOME).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin bge-m3 \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /usr/local/bin/bge-m3-server /usr/local/bin/bge-m3-encode /usr/local/bin/
COPY deploy/docker/healthcheck.sh /usr/local/bin/bge-m3-healthcheck
# MODEL_PATH keeps the server's default, BAAI/bge-m3 from the Hub into $HF_HOME/hub on the
# first start; mount a model directory and set MODEL_PATH=/model to serve it instead.
ENV HF_HOME=/data
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 8101
# The server is PID 1 (exec form, no shell in between): SIGTERM reaches it and starts the
# graceful drain (--shutdown-timeout, default 30 s), so stop timeouts must be longer than that.
STOPSIGNAL SIGTERM
# The start period allows for the first download of the model (2.3 GB); /health answers 503
# while loading and while draining.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 \
    CMD ["/usr/local/bin/bge-m3-healthcheck"]
ENTRYPOINT ["/usr/local/bin/bge-m3-server"]
