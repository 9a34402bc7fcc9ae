#!/usr/bin/env bash
# Build (once, cached) and push the images of the `pull` benchmark: ~210 MB of files from
# Debian packages in several layers, and a second image sharing most of them.
#
#   bash bench/pull-image.sh REGISTRY      e.g. 127.0.0.1:5100 (plain HTTP, the test fixture's)
#
#   pull-a  busybox base + libllvm14 + gcc-12 + libicu72   (4 layers, ~210 MB unpacked)
#   pull-b  busybox base + libllvm14 + libz3-4             (shares the base and llvm layers)
#
# The .deb files come from Debian's package registry (apt-get download); the OCI layout is
# cached under ${SKIFF_FIXTURE_DIR:-/tmp/skiff-fixture}/oci-pull, keyed by the package versions.
set -euo pipefail
exec </dev/null

REGISTRY=${1:?usage: pull-image.sh REGISTRY}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIXTURE_DIR=${SKIFF_FIXTURE_DIR:-/tmp/skiff-fixture}
OUT=$FIXTURE_DIR/oci-pull
DEBS=$FIXTURE_DIR/pull-debs
PACKAGES=(libllvm14 gcc-12 libicu72 libz3-4)
log() { echo "pull-image: $*" >&2; }

versions() {
  local p
  for p in "${PACKAGES[@]}"; do
    printf '%s=%s ' "$p" "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  done
}

build() {
  local tmp L B p
  mkdir -p "$DEBS"
  (cd "$DEBS" && for p in "${PACKAGES[@]}"; do ls "$p"_*.deb >/dev/null 2>&1 || apt-get download -q "$p"; done)
  tmp=$(mktemp -d "$FIXTURE_DIR/oci-pull-build.XXXXXX")
  L=$tmp/layout B=$tmp/bundle
  log "building the pull images (${PACKAGES[*]})"
  umoci init --layout "$L"
  umoci new --image "$L:pull-base"
  umoci unpack --image "$L:pull-base" "$B"
  cp "$(command -v busybox)" "$B/rootfs/busybox"
  mkdir -p "$B/rootfs/bin" && ln -sf ../busybox "$B/rootfs/bin/sh"
  umoci repack --history.created_by "skiff bench: busybox" --image "$L:pull-base" "$B"
  rm -rf "$B"
  # layer() TAG FROM PACKAGE: FROM plus one layer holding the files of PACKAGE.
  layer() {
    umoci unpack --image "$L:$2" "$B"
    dpkg -x "$DEBS/$3"_*.deb "$B/rootfs"
    umoci repack --history.created_by "skiff bench: $3" --image "$L:$1" "$B"
    rm -rf "$B"
  }
  layer pull-llvm pull-base libllvm14
  layer pull-gcc pull-llvm gcc-12
  layer pull-a pull-gcc libicu72
  layer pull-b pull-llvm libz3-4
  for t in pull-a pull-b; do
    umoci config --no-history --image "$L:$t" --config.cmd /busybox --config.cmd sleep --config.cmd 3600
  done
  umoci gc --layout "$L"
  versions >"$L/.skiff-recipe"
  rm -rf "$OUT"
  mv "$L" "$OUT"
  rm -rf "$tmp"
}

if [ "$(cat "$OUT/.skiff-recipe" 2>/dev/null)" != "$(versions)" ]; then
  build
else
  log "reusing cached $OUT"
fi
for t in pull-a pull-b; do
  skopeo copy -q --dest-tls-verify=false "oci:$OUT:$t" "docker://$REGISTRY/$t:latest"
done
du -sk "$OUT/blobs" | awk '{printf "pull-image: layout %.0f MB (compressed blobs)\n", $1 / 1024}' >&2
