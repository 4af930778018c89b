# mtlens container image, for the Kubernetes DaemonSet in deploy/kubernetes (README "Install on a
# node" > Kubernetes). The image holds the release `make dist` builds, installed by `make install`
# as on a node; nothing else of the source tree.
#
#   docker build --build-arg MTLENS_COMMIT=$(git rev-parse --short=12 HEAD) -t mtlens:0.1.0 .
#
# x86_64 only (the BPF object is built for it). The build stage turns the build host's kernel BTF
# (/sys/kernel/btf/vmlinux) into bpf/vmlinux.h unless the context has one; the programs are CO-RE,
# so the image runs on any kernel with BTF, not only the builder's.

# Build: Debian 12 with Node 20, the eBPF and shim toolchain (the Makefile's BUILD_DEB_PACKAGES),
# then the release exactly as `make dist` (scripts/dist.sh) makes it for a node.
FROM node:20-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The commit `mtlens version` and /status show (the context has no .git).
ARG MTLENS_COMMIT
# DEB_PACKAGES= : the packages above are all the build needs; make would otherwise install the
# test suite's tools too. The release is then installed into /image as `make install` lays it out
# on a node: /usr/local/lib/mtlens, /usr/local/bin/mtlens, /etc/mtlens/config.yaml, /var/lib/mtlens.
RUN make dist DEB_PACKAGES= \
 && make install DESTDIR=/image PREFIX=/usr/local

# Run: Node 20 on the same Debian release, with the runtime libraries of the native shim
# (build/libmtlens.so needs libbpf.so.1, which needs libelf.so.1 and libz.so.1) and openssl (the
# self-signed control API certificate, self_telemetry.tls without cert_file).
FROM node:20-bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 libelf1 zlib1g openssl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /image/ /
# root: loading BPF programs and reading other users' /proc entries need capabilities that
# Kubernetes grants only to uid 0 (a non-root container gets no effective capabilities without
# file capabilities, which allowPrivilegeEscalation: false forbids). The DaemonSet drops every
# capability but the five the agent needs and mounts the root filesystem read-only.
USER 0
WORKDIR /var/lib/mtlens
EXPOSE 19090
ENTRYPOINT ["/usr/local/bin/mtlens", "run", "--config", "/etc/mtlens/config.yaml"]
