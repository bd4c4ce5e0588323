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
# Liveness, as the Kubernetes livenessProbe asks it: GET /healthz on the HTTP port
# (`portcullis health --live`; distroless has no curl). Deliberately not
# grpc.health.v1: it reports NOT_SERVING while an IdP's keys are missing, and a
# container engine that restarts on that (Docker, ECS) would restart every healthy
# replica during an IdP outage, which cannot bring the keys back and throws away
# warm caches. Readiness (keys loaded) is for the load balancer: Envoy's gRPC health
# check, or `portcullis health --service envoy.service.auth.v3.Authorization`.
# Another listen.http address: --http HOST:PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/portcullis", "health", "--live"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
