#!/usr/bin/env bash
# Install the Debian packages Skiff's tests and runtime need.
# Idempotent and non-interactive: a re-run on a machine that already has
# everything only runs one dpkg-query (well under 2 s).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
exec </dev/null

PACKAGES=(
  crun runc docker-registry skopeo umoci busybox-static nftables iproute2
  apache2-utils podman git jq curl dnsutils python3-venv protobuf-compiler
  ca-certificates gcc libc6-dev python3 sqlite3 libseccomp-dev pkg-config
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
  exit 1
fi

echo "install-deps: installing: ${missing[*]}"
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# Refresh the index only when there is none; retry after an update if the install fails (stale lists).
if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
  apt-get update -q
fi
if ! apt-get install "${APT_OPTS[@]}" "${missing[@]}"; then
  apt-get update -q
  apt-get install "${APT_OPTS[@]}" "${missing[@]}"
fi
echo "install-deps: done"
