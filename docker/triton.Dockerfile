# syntax=docker/dockerfile:1
# NGC Triton with the project's two Rust backends (docs/deploy.md).
#   docker build -f docker/triton.Dockerfile -t visual-search/triton .
# The model repository is mounted at /models (docker/compose.yaml, k8s/triton.yaml) or baked
# into an image built FROM this one.

# The backends are built on Debian 12 (glibc 2.36), older than the glibc 2.39 of Ubuntu 24.04
# under the Triton image, so every glibc symbol they import exists at run time.
FROM rust:1.95.0-bookworm AS backends
WORKDIR /src
COPY . .
# The same build command as CI's (scripts/test.sh); the cache mounts keep crates and objects
# between builds, so the libraries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace \
    && install -D -m 0644 target/release/libtriton_box_embed.so /out/box_embed/libtriton_box_embed.so \
    && install -D -m 0644 target/release/libtriton_preprocess.so /out/preprocess/libtriton_preprocess.so

# NVRTC compiles the CUDA kernels when a KIND_GPU instance loads. Pinned to the version CI
# compiles them with (scripts/setup_nvrtc.sh): a driver rejects PTX from a newer NVRTC.
FROM python:3.12-slim-bookworm AS nvrtc
ARG NVRTC_VERSION=13.0.88
RUN pip install --no-cache-dir --no-deps --target /opt/nvrtc "nvidia-cuda-nvrtc==${NVRTC_VERSION}"

# 25.06 or later: the gRPC cancellation crashes of 2.51 (server#7368, #8034) are fixed there.
# 25.10 is CUDA 13.0, which the kernels' cudarc build (cuda-13000) and NVRTC 13 need.
FROM nvcr.io/nvidia/tritonserver:25.10-py3
COPY --from=backends /out/ /opt/tritonserver/backends/
COPY --from=nvrtc /opt/nvrtc/nvidia/cu13/lib/ /opt/nvrtc/lib/
# cudarc dlopen()s libnvrtc by name: ours first on the loader's path.
ENV LD_LIBRARY_PATH=/opt/nvrtc/lib:${LD_LIBRARY_PATH}
# A numeric user so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 triton-vs \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin triton-vs
USER 10001:10001
EXPOSE 8000 8001 8002
# python3 is in the -py3 image (the Python backend needs it); curl may not be.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
# The image's own entrypoint (driver and CUDA checks) stays; it runs this command.
CMD ["tritonserver", "--model-repository=/models", "--backend-directory=/opt/tritonserver/backends", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--exit-on-error=true", \
     "--strict-readiness=true"]
