# mtlens: `make run` sets up everything and starts the agent; `make test` sets up everything
# and runs the whole suite. Both install missing Debian packages when run as root.
SHELL := /bin/bash
.DEFAULT_GOAL := build

# clang/llvm/libbpf-dev/bpftool/libelf-dev/zlib1g-dev: eBPF programs and the native shim (also
# what the Dockerfile's build stage installs before it runs `make dist`);
# prometheus: promtool (metrics lint in tests); openssl: certificates; curl: the README's TLS
# examples, tested; libbpf-tools: tcplife and wrk: benchmark baselines; iproute2: `ip` for the
# network-namespace test; systemd: systemd-analyze (the unit's verify test); util-linux (setpriv,
# prlimit, unshare) and libcap2-bin (capsh): the least-capabilities test; tmux: the terminal
# `mtlens top` is tested in; kubernetes-client: `kubectl kustomize` (the Kubernetes manifests'
# test), unless a kubectl is already installed (another vendor's kubectl package, which conflicts
# with Debian's, renders the same base).
BUILD_DEB_PACKAGES := clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config
KUBECTL_PACKAGE := $(if $(shell command -v kubectl 2>/dev/null),,kubernetes-client)
DEB_PACKAGES := $(BUILD_DEB_PACKAGES) prometheus openssl curl libbpf-tools wrk iproute2 systemd util-linux libcap2-bin tmux $(KUBECTL_PACKAGE)
CONFIG ?= config.yaml
NODE_STAMP := node_modules/.package-lock.json
TESTS = $(shell find dist/test -name '*.test.js' | sort)

.PHONY: deps system-deps build ts bpf native run test check-deps stress bench demo clean dist install uninstall

# The release (make dist) and where `make install` puts it.
VERSION := $(shell node -p "require('./package.json').version" 2>/dev/null || echo 0.0.0)
RELEASE := release/mtlens-$(VERSION)
TARBALL := release/mtlens-$(VERSION)-linux-$(shell uname -m).tar.gz
PREFIX ?= /usr/local
DESTDIR ?=

system-deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "warning: missing Debian packages:$$missing (run make as root to install them)" >&2; \
	  fi; \
	fi

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

deps: system-deps $(NODE_STAMP)

# eBPF objects (CO-RE; -g for BTF, which CO-RE and tp_btf need) and the native shim over libbpf.
BPF_CFLAGS := -target bpf -g -O2 -D__TARGET_ARCH_x86 -Wall -Werror
SHIM_CFLAGS := -O2 -g -Wall -Werror -fPIC -shared

bpf/vmlinux.h:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

build/mtlens.bpf.o: bpf/mtlens.bpf.c bpf/mtlens_abi.h bpf/vmlinux.h
	@mkdir -p build
	clang $(BPF_CFLAGS) -Ibpf -c $< -o $@
	llvm-strip -g $@

build/libmtlens.so: native/shim.c bpf/mtlens_abi.h
	@mkdir -p build
	cc $(SHIM_CFLAGS) -o $@ $< -lbpf -lelf -lz

bpf: build/mtlens.bpf.o
native: build/libmtlens.so

ts: $(NODE_STAMP)
	node_modules/.bin/tsc -p tsconfig.json
	node scripts/build-info.mjs

build: deps bpf native ts

run: build
	node dist/src/cli.js run --config $(CONFIG)

# The house rules (.dependency-cruiser.cjs): imports follow the layers; a violation names the
# rule and the import.
check-deps: $(NODE_STAMP)
	node_modules/.bin/depcruise src --config .dependency-cruiser.cjs

test: build check-deps
	node --test --test-concurrency=1 --test-reporter=spec $(TESTS)

# Long kernel stress runs (a million connections through the agent while another BPF user comes
# and goes on the same tracepoints), outside `make test`: they take minutes.
stress: build
	node --test --test-concurrency=1 --test-reporter=spec $(shell find dist/test -name '*.stress.js' | sort)

# A simulated telemt, a traffic generator and the agent watching them, until Ctrl-C.
demo: build
	bash scripts/demo.sh

# BENCH=name runs only dist/bench/<name>.bench.js.
bench: build
	@set -e; for f in $$(find dist/bench -name '$(if $(BENCH),$(BENCH),*).bench.js' | sort); do echo "== $$f"; node $$f; done

# A self-contained release directory and tarball (scripts/dist.sh): compiled src, production
# node_modules, the BPF object, the shim, bin/mtlens, a default config and the systemd unit.
dist: build
	bash scripts/dist.sh $(RELEASE) $(TARBALL)

# Installs the release `make dist` left (scripts/install.sh): $(PREFIX)/lib/mtlens, the
# $(PREFIX)/bin/mtlens link, the unit, /etc/mtlens/config.yaml unless present, /var/lib/mtlens.
install:
	@test -x $(RELEASE)/bin/mtlens || { echo "no release in $(RELEASE): run make dist first" >&2; exit 1; }
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' sh scripts/install.sh $(RELEASE)

# Removes the program, link and unit; config and state stay.
uninstall:
	PREFIX='$(PREFIX)' DESTDIR='$(DESTDIR)' sh scripts/install.sh --uninstall

clean:
	rm -rf dist build release bpf/vmlinux.h
