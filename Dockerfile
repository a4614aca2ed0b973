# The Gatehouse container image (docs/deploy.md): a Rust build stage, then the binary alone on a
# distroless base (glibc, CA certificates, no shell), run as a non-root user.
#
#   podman build -t gatehouse .        # or: docker build -t gatehouse .
#   podman run --rm -p 8080:8080 gatehouse                        # the embedded demo
#   podman run --rm -p 8080:8080 -v ./gatehouse.yaml:/etc/gatehouse/gatehouse.yaml:ro \
#       gatehouse run -c /etc/gatehouse/gatehouse.yaml            # your config
#
# Build with `--format docker` under podman/buildah: the OCI image format has no HEALTHCHECK.

# The base images, replaceable (a mirror, a pinned digest).
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the binary comes from: the build stage below, or an image that holds a binary built
# elsewhere at /out/gatehouse (the build stage is then skipped; tests/container.rs does this).
ARG BINARY_FROM=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The target directory and the registry are cache mounts: a rebuild recompiles only what changed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gatehouse \
    && mkdir -p /out && cp target/release/gatehouse /out/gatehouse

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="Gatehouse" \
      org.opencontainers.image.description="A self-healing HTTP API gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary /out/gatehouse /usr/bin/gatehouse
# distroless's `nonroot` user, by number so that `runAsNonRoot` can check it.
USER 65532:65532
# Where `ctl health` (the HEALTHCHECK) finds the admin listener: the config's admin.address.
ENV GATEHOUSE_ADMIN=127.0.0.1:9901
# The traffic listener (the demo's, and the usual one). Publish the admin port (9901) only with a
# config whose admin listens on 0.0.0.0 with a token.
EXPOSE 8080
# GET /healthz on the admin listener; exit 0 or 1. No curl in the image: the binary asks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/bin/gatehouse", "ctl", "health"]
# SIGTERM drains in-flight requests (drain_timeout, 30 s by default): stop with a longer grace,
# e.g. `podman stop -t 40`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/gatehouse"]
# The demo, reachable from outside the container; its admin listener (and dashboard) stays on
# the container's loopback, where the HEALTHCHECK asks it.
CMD ["demo", "--listen", "0.0.0.0:8080", "--admin", "127.0.0.1:9901"]
