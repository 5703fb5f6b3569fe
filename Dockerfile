# syntax=docker/dockerfile:1
#
# cased-agent container image: one static binary on a distroless base.
#
#   docker build -t cased-agent:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/cased-agent:TAG --push .
#
# The binary is linked statically against glibc (crt-static on the *-gnu
# target), so the final stage needs no libc, only the CA bundle that
# distroless/static ships (/etc/ssl/certs/ca-certificates.crt) for HTTPS to
# the Cased API. The eBPF object, when there is one, is embedded in the
# binary by the build: nothing else is copied.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION} AS build
# a failing stage of a pipe fails the RUN
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# --target is explicit so that RUSTFLAGS (crt-static) applies to the agent
# only, not to build scripts and proc-macros. The cache mounts need BuildKit
# (the default builder of Docker >= 23).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target "$target" --bin cased-agent; \
    install -D -m 0755 "target/$target/release/cased-agent" /out/cased-agent; \
    /out/cased-agent --version

# distroless/static: no shell, no package manager, CA certificates, a nonroot
# user. The image runs as that user by default (enough for `--once` with the
# stdout sink on a laptop); the DaemonSet runs it as uid 0 with named
# capabilities instead of privileged (see deploy/kubernetes/daemonset.yaml).
FROM gcr.io/distroless/static-debian12:nonroot
# checkov:skip=CKV_DOCKER_2: no shell or curl in distroless; Kubernetes probes /healthz and /readyz on the health port instead
COPY --from=build /out/cased-agent /usr/local/bin/cased-agent
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080 4317 4318
# distroless' nonroot, numeric so the kubelet can check runAsNonRoot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cased-agent"]
