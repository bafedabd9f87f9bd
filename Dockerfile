# syntax=docker/dockerfile:1
#
# One image for every role: `ordermesh` (the server; the Deployment picks the
# role by argument: all|order|inventory|payment|gateway) and `orderctl`.
#
#   docker build -t ordermesh:dev .
#   docker run --rm -p 8080:8080 ordermesh:dev          # every role, SQLite in /data
#   docker run --rm ordermesh:dev order --help          # one role's flags
#   docker run --rm --entrypoint orderctl ordermesh:dev --help
#
# Dependencies are built in their own layer (cargo-chef), so a change to the
# sources rebuilds only the workspace crates.

# Base images are pinned by digest (the tag says which, the digest exactly
# which bytes); scripts/check-image-pins.py refuses a bare tag, and CI's
# `--resolve` step checks each digest exists and reports a tag that moved.
# To update: docs/rollout.md, section 1.
#
# The toolchain the workspace is tested with; bump together with CI.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe lists the dependency graph only (manifests and lock file).
FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY bin ./bin
COPY lib ./lib
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Cached until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin ordermesh --bin orderctl
COPY Cargo.toml Cargo.lock ./
COPY bin ./bin
COPY lib ./lib
# lib/proto's build script compiles these with protox (no protoc needed).
COPY proto ./proto
RUN cargo build --release --locked --bin ordermesh --bin orderctl \
    && mkdir -p /out/data \
    && cp target/release/ordermesh target/release/orderctl /out/

# glibc, libgcc, CA certificates and a `nonroot` user (65532); no shell.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=builder /out/ordermesh /usr/local/bin/ordermesh
COPY --from=builder /out/orderctl /usr/local/bin/orderctl
# The SQLite directory for `docker run`; in Kubernetes a volume is mounted here.
COPY --from=builder --chown=65532:65532 /out/data /data
# Inside a container every listener must be reachable from outside it.
ENV ORDERMESH_GATEWAY_ADDR=0.0.0.0:8080 \
    ORDERMESH_ORDER_ADDR=0.0.0.0:50051 \
    ORDERMESH_INVENTORY_ADDR=0.0.0.0:50052 \
    ORDERMESH_PAYMENT_ADDR=0.0.0.0:50053 \
    ORDERMESH_ADMIN_ADDR=0.0.0.0:9464 \
    ORDERMESH_DATA_DIR=/data
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /data
EXPOSE 8080 50051 50052 50053 9464
ENTRYPOINT ["/usr/local/bin/ordermesh"]
CMD ["all"]
