# Two stages: build with the Rust toolchain, run on a slim Debian with CA roots
# (JWKS and discovery are fetched over https with the system trust store).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/portcullis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 10001
EXPOSE 50051 50052 9090
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.yaml
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
