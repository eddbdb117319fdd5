# Conduit sidecar image: the wheel is built with maturin (Rust core + Python package), then
# installed into a slim runtime that runs as a non-root user.
#
#   docker build -t conduit-sidecar:0.1.0 .
#   docker run --rm -p 50051:50051 conduit-sidecar:0.1.0
#
# Stage 1 needs Rust and Python headers; stage 2 carries only the installed wheel and its
# pure-Python/binary dependencies (no compiler, no Rust toolchain, no sources).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG RUST_TOOLCHAIN=stable
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain "${RUST_TOOLCHAIN}"
ENV PATH=/root/.cargo/bin:${PATH}
RUN pip install --no-cache-dir maturin==1.16.0
WORKDIR /src
# Manifests first so the dependency layer is cached across source edits.
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY conduit_core ./conduit_core
COPY conduit_sidecar ./conduit_sidecar
RUN maturin build --release --strip --out /wheels

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/conduit --no-create-home conduit \
 && mkdir -p /var/lib/conduit /etc/conduit \
 && chown 10001:10001 /var/lib/conduit
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER 10001:10001
WORKDIR /var/lib/conduit
# Inside a pod the application reaches the sidecar on 127.0.0.1, but kubelet's gRPC probes
# connect to the pod IP, so the container listens on all interfaces; set CONDUIT_TOKEN (health
# stays exempt) or a NetworkPolicy to keep other pods out.
ENV CONDUIT_LISTEN=0.0.0.0:50051 \
    CONDUIT_STORE_URL=sqlite:////var/lib/conduit/conduit.db \
    CONDUIT_METRICS_PORT=9464 \
    CONDUIT_METRICS_HOST=0.0.0.0 \
    CONDUIT_JSON_LOGS=true \
    PYTHONUNBUFFERED=1
EXPOSE 50051 9464
VOLUME ["/var/lib/conduit"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["conduit-sidecar"]
CMD ["serve"]
