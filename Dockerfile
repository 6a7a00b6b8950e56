# stitch: multi-stage build. The config is read from /etc/stitch/stitch.toml; mount yours there:
#   docker run -p 8080:8080 -v $PWD/conf/stitch.toml:/etc/stitch/stitch.toml:ro stitch
FROM rust:1-slim-bookworm AS build
# cmake: zlib-ng; perl + make: pingora-openssl builds OpenSSL from source (its "vendored" feature).
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl pkg-config libssl-dev g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The patched pingora-http ([patch.crates-io], vendor/PATCHES.md).
COPY vendor ./vendor
RUN cargo build --release --locked --bin stitch

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 stitch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home stitch
COPY --from=build /src/target/release/stitch /usr/local/bin/stitch
COPY conf/stitch.toml /etc/stitch/stitch.toml
# Numeric, so that Kubernetes' runAsNonRoot can verify it; deploy/ runs as 10001:10001 too.
USER 10001:10001
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/stitch"]
CMD ["--config", "/etc/stitch/stitch.toml"]
