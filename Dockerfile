# portcullis container image.
#
#   docker build -t portcullis .
#   docker run -v $PWD/portcullis.yaml:/etc/portcullis/portcullis.yaml:ro -p 50051:50051 -p 9090:9090 portcullis
#
# Two stages: the build runs the exact command CI runs on every change (.ci/run
# reads it from the line below), the runtime is distroless: glibc, CA roots for
# https JWKS, no shell, no package manager, a non-root user.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions in Cargo.lock, never newer ones.
RUN cargo build --release --locked --bin portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="Envoy ext_authz v3 service: JWT verification and backend headers at the edge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/portcullis-dev/portcullis"
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
# distroless' nonroot user (uid 65532); the root filesystem may be mounted read-only:
# portcullis writes nothing.
USER 65532:65532
# 50051 ext_authz + grpc.health.v1, 50052 Admin API, 9090 /healthz /readyz /metrics.
EXPOSE 50051 50052 9090
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.yaml
# SERVING once every issuer a route uses has keys. With listen.tls, pass
# --ca/--cert/--key (docker run --health-cmd ...) or probe http://:9090/readyz instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "health", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
