# floe in a container: a multi-stage build, a small runtime image, a non-root user.
#
#   docker build -t floe .
#   docker run --rm --network host floe serve --listen 0.0.0.0:3478 --http 0.0.0.0:8080 \
#     --jwt-secret "$JWT_SECRET" --auth-secret "$TURN_SECRET"
#
# Use host networking for a TURN relay: each allocation gets its own UDP port from the relay
# range (49152-65535 by default), and publishing that many ports through Docker's proxy is slow
# and hides the clients' addresses. docs/deploy.md has the details and a Kubernetes note.

FROM rust:1-bookworm AS build
# clang and libbpf's headers build the XDP fast path's eBPF program (docs/xdp.md); without them
# floe builds without it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifests first, so that the dependency build is cached across source changes.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates ./crates
COPY web ./web
COPY bpf ./bpf
RUN cargo build --release --locked -p floe \
 && install -D -m 0755 target/release/floe /out/floe

FROM debian:bookworm-slim
# ca-certificates: `floe peer` and TLS to other services verify certificates against them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin floe
COPY --from=build /out/floe /usr/local/bin/floe
USER floe:floe
# STUN/TURN over UDP and TCP, TURN over TLS, signalling (HTTP, WebSocket). The operations
# listener stays on the container's loopback unless configured otherwise.
EXPOSE 3478/udp 3478/tcp 5349/tcp 8080/tcp
# SIGTERM drains briefly (--term-drain-timeout) then stops; SIGUSR1 drains until empty.
STOPSIGNAL SIGTERM
# Readiness from the operations listener (127.0.0.1:9642 inside the container): unhealthy while
# draining or above --ready-max-load.
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/floe", "admin", "ready"]
ENTRYPOINT ["/usr/local/bin/floe"]
CMD ["serve", "--listen", "0.0.0.0:3478", "--http", "0.0.0.0:8080"]
