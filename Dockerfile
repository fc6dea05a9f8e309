# Sluice: one image for every stage (`sluice run --stage NAME`) and the CLI.
#
# Build: docker build -t sluice:dev .
# The build stage compiles the release binary; the runtime stage is Debian slim with the
# binary only, running as an unprivileged user. (The embeddings stage's ONNX Runtime and model
# files are added by its issue, as a layer of this image.)

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
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sluice --create-home sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
COPY pipeline.yaml /etc/sluice/pipeline.yaml
USER 10001
WORKDIR /var/lib/sluice
EXPOSE 8080 9400
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "-f", "/etc/sluice/pipeline.yaml"]
