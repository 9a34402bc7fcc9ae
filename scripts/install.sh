#!/usr/bin/env bash
# Install Skiff on this (Debian) machine and run its daemon with the embedded SQLite store.
#
#   sudo bash scripts/install.sh [skiff server flags...]
#
# 1. installs the system packages Skiff needs (scripts/install-deps.sh: crun, ...);
# 2. builds the release binary and installs it as /usr/local/bin/skiff;
# 3. runs `skiff server --data-dir /var/lib/skiff --listen 127.0.0.1:8080` in the foreground
#    (extra arguments are passed on; Ctrl-C stops the daemon, the groups keep running and are
#    re-adopted by the next start).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash scripts/install-deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
cargo build --release --locked -p skiff
install -m 0755 target/release/skiff /usr/local/bin/skiff
echo "installed /usr/local/bin/skiff; starting the daemon (API on https://127.0.0.1:8080; CA and admin token in /var/lib/skiff)"
exec /usr/local/bin/skiff server --data-dir /var/lib/skiff --listen 127.0.0.1:8080 "$@"
