#!/bin/bash
# Stages the release (`make dist`, after `make build`): everything a node needs to run the agent
# with Node.js >= 20 and the libbpf/libelf runtime libraries, and nothing of the source tree.
# The layout mirrors the checkout's (dist/src, build/, bin/, package.json side by side), so the
# paths the agent resolves from its own location (the shim and BPF object beside dist/, the
# version in package.json) hold in both.
#   scripts/dist.sh STAGE TARBALL
set -euo pipefail
stage=$1
tarball=$2
rm -rf "$stage" "$tarball"
mkdir -p "$stage/bin" "$stage/build" "$stage/dist" "$stage/deploy/systemd"

# Compiled product code only: no tests, benchmarks or source maps pointing at a tree that is not there.
stage_abs=$(realpath "$stage")
(cd dist && find src -name '*.js' -print0 | xargs -0 cp --parents -t "$stage_abs/dist")
cp dist/build-info.json "$stage/dist/"
cp build/mtlens.bpf.o build/libmtlens.so "$stage/build/"
cp bin/mtlens "$stage/bin/"
cp package.json package-lock.json "$stage/"
cp deploy/systemd/mtlens.service "$stage/deploy/systemd/"
cp scripts/install.sh "$stage/install.sh"

# The default config, with the state in systemd's StateDirectory (/var/lib/mtlens) instead of
# the checkout's ./var.
sed 's#^  state_dir: \./var$#  state_dir: ${STATE_DIRECTORY:-/var/lib/mtlens}#' config.yaml > "$stage/config.yaml"
grep -q '^  state_dir: ${STATE_DIRECTORY:-/var/lib/mtlens}$' "$stage/config.yaml" || {
  echo "dist: config.yaml no longer has 'state_dir: ./var'; update scripts/dist.sh" >&2
  exit 1
}

# Production dependencies exactly as locked, installed into the stage, not the checkout.
(cd "$stage" && npm ci --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error)
rm -f "$stage/node_modules/.package-lock.json"

tar -C "$(dirname "$stage")" -czf "$tarball" "$(basename "$stage")"
echo "dist: $stage ($(du -sh "$stage" | cut -f1)), $tarball ($(du -h "$tarball" | cut -f1))"
