# syntax=docker/dockerfile:1
# The gateway (HTTP service and ingest CLI) in a small Debian runtime (docs/deploy.md).
#   docker build -f docker/gateway.Dockerfile -t visual-search/gateway .
# The CLIP tokenizer (clip-vocab.json, clip-merges.txt) is read from /opt/gateway/tokenizer:
# mounted there (compose), or copied in by an image built FROM this one (docs/deploy.md).

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The same build command as CI's (scripts/test.sh).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace \
    && install -D -m 0755 target/release/gateway /out/gateway

# The same Debian release as the build stage: the same glibc and libstdc++ (usearch is C++).
FROM debian:12-slim
# curl for the health check only. Not pinned to a version: Debian's security updates replace
# the old one in the archive, so a pinned build would break at the next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10002 gateway \
    && useradd --system --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin gateway \
    && install -d -o 10002 -g 10002 /var/lib/gateway \
    && install -d /opt/gateway/tokenizer
COPY --from=build /out/gateway /usr/local/bin/gateway
# Exposed by default, so the gateway refuses to start without write keys (GATEWAY_WRITE_KEYS);
# /health and /metrics for probes and scrapers on the ops port, without keys.
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_OPS_LISTEN=0.0.0.0:9090 \
    GATEWAY_DATA_DIR=/var/lib/gateway
USER 10002:10002
VOLUME ["/var/lib/gateway"]
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9090/health"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--tokenizer-dir=/opt/gateway/tokenizer"]
