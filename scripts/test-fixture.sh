#!/usr/bin/env bash
# Skiff test fixture: local OCI test images and two real registries on loopback.
#
#   scripts/test-fixture.sh start   build images (cached), start registries, push images
#   scripts/test-fixture.sh stop    stop the registries this fixture started (by pid file)
#   scripts/test-fixture.sh env     print `export ...` lines for the test suite
#   scripts/test-fixture.sh status  show what is running
#   scripts/test-fixture.sh running exit 0 iff this fixture's two registries are up
#   scripts/test-fixture.sh clean   stop, then delete all fixture state (incl. image cache)
#
# Registries (Debian's docker-registry, distribution 2.8, plain HTTP):
#   anonymous   127.0.0.1:${SKIFF_TEST_REGISTRY_PORT:-5100}
#   basic auth  127.0.0.1:${SKIFF_TEST_REGISTRY_AUTH_PORT:-5101}  user skiff / skiff-pass
# Images pushed to both (all :latest):
#   busybox               1 layer; busybox + applet symlinks, /etc/passwd,group; Cmd [sh]
#   busybox-entrypoint    same layer; Entrypoint [/bin/echo from-entrypoint], Cmd [default-arg],
#                         WorkingDir /srv, User 0:0, Env IMAGE_ENV=yes
#   busybox-httpd         2 layers; /www/index.html "hello from skiff"; httpd on 80/tcp
#   busybox-multilayer    3 layers; +/data/a.txt, then whiteout a.txt and +/data/b.txt
#   busybox-v2s2          busybox converted to a Docker v2 schema2 manifest (media-type tests)
# State lives under ${SKIFF_FIXTURE_DIR:-/tmp/skiff-fixture}; nothing outside it is touched.
set -euo pipefail
exec </dev/null

FIXTURE_DIR=${SKIFF_FIXTURE_DIR:-/tmp/skiff-fixture}
ANON_PORT=${SKIFF_TEST_REGISTRY_PORT:-5100}
AUTH_PORT=${SKIFF_TEST_REGISTRY_AUTH_PORT:-5101}
REG_USER=skiff
REG_PASS=skiff-pass
# Bump when the image recipe below changes so cached layouts get rebuilt.
RECIPE_VERSION=4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OCI_DIR="$FIXTURE_DIR/oci"
IMAGES=(busybox busybox-entrypoint busybox-httpd busybox-multilayer busybox-probe evil-layer)
PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { echo "test-fixture: $*" >&2; }
die() { echo "test-fixture: ERROR: $*" >&2; exit 1; }

need() {
  local missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ "${#missing[@]}" -eq 0 ] || die "missing commands: ${missing[*]} (run scripts/install-deps.sh)"
}

# ---------------------------------------------------------------- images

busybox_bin() {
  # Needs the static busybox (busybox-static package): a dynamic one would not run in the image.
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then
      echo "$b"; return
    fi
  done
  die "no static busybox found (install busybox-static)"
}

# Cache key of the image layout. (Pipes into early-exiting readers such as
# `head` or `grep -q` are avoided throughout: with pipefail they fail on SIGPIPE.)
recipe_stamp() {
  local v
  v=$("$1" 2>&1 || true)
  echo "$RECIPE_VERSION ${v%%$'\n'*} $(cat "$ROOT/tests/fixtures/escape-probe.c" "$ROOT/tests/fixtures/evil-image.py" | sha256sum | cut -c1-16)"
}

populate_base_rootfs() {
  local root=$1 bb=$2 applet
  mkdir -p "$root"/{bin,etc,root,home,srv,proc,sys,dev,var,run,usr/bin,usr/sbin,sbin}
  mkdir -p -m 1777 "$root/tmp"
  chmod 700 "$root/root"
  cp "$bb" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$root/bin/$applet"
  done
  cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
  : >"$root/etc/hosts"
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  chown -R 0:0 "$root"
}

build_images() {
  local tmp bb
  bb=$(busybox_bin)
  tmp=$(mktemp -d "$FIXTURE_DIR/oci-build.XXXXXX")
  local L="$tmp/layout" B="$tmp/bundle"
  log "building OCI layout in $OCI_DIR (busybox from $bb)"

  umoci init --layout "$L"

  # busybox: one layer
  umoci new --image "$L:busybox"
  umoci unpack --image "$L:busybox" "$B"
  populate_base_rootfs "$B/rootfs" "$bb"
  umoci repack --history.created_by "skiff fixture: busybox rootfs" --image "$L:busybox" "$B"
  rm -rf "$B"
  umoci config --no-history --image "$L:busybox" \
    --config.env "$PATH_ENV" --config.cmd sh \
    --config.label org.skiff.fixture=busybox

  # busybox-entrypoint: same layer, different config
  umoci config --no-history --image "$L:busybox" --tag busybox-entrypoint \
    --config.entrypoint /bin/echo --config.entrypoint from-entrypoint \
    --config.cmd default-arg \
    --config.workingdir /srv \
    --config.user 0:0 \
    --config.env IMAGE_ENV=yes \
    --config.label org.skiff.fixture=busybox-entrypoint

  # busybox-httpd: base + layer with /www/index.html
  umoci unpack --image "$L:busybox" "$B"
  mkdir -p "$B/rootfs/www"
  printf 'hello from skiff\n' >"$B/rootfs/www/index.html"
  chmod 644 "$B/rootfs/www/index.html"
  umoci repack --history.created_by "skiff fixture: add /www" --image "$L:busybox-httpd" "$B"
  rm -rf "$B"
  umoci config --no-history --image "$L:busybox-httpd" \
    --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 80 --config.cmd -h --config.cmd /www \
    --config.exposedports 80/tcp \
    --config.label org.skiff.fixture=busybox-httpd

  # busybox-multilayer: base + add /data/a.txt + (delete a.txt -> whiteout, add b.txt)
  umoci unpack --image "$L:busybox" "$B"
  mkdir -p "$B/rootfs/data"
  printf 'a\n' >"$B/rootfs/data/a.txt"
  umoci repack --refresh-bundle --history.created_by "skiff fixture: add /data/a.txt" \
    --image "$L:busybox-multilayer" "$B"
  rm -f "$B/rootfs/data/a.txt"
  printf 'b\n' >"$B/rootfs/data/b.txt"
  umoci repack --history.created_by "skiff fixture: rm /data/a.txt, add /data/b.txt" \
    --image "$L:busybox-multilayer" "$B"
  rm -rf "$B"
  umoci config --no-history --image "$L:busybox-multilayer" \
    --config.label org.skiff.fixture=busybox-multilayer

  # busybox-probe: base + /bin/probe, a static program that tries sandbox escapes
  umoci unpack --image "$L:busybox" "$B"
  gcc -static -O2 -o "$B/rootfs/bin/probe" "$ROOT/tests/fixtures/escape-probe.c"
  umoci repack --history.created_by "skiff fixture: add /bin/probe" --image "$L:busybox-probe" "$B"
  rm -rf "$B"
  umoci config --no-history --image "$L:busybox-probe" \
    --config.label org.skiff.fixture=busybox-probe

  # evil-layer: a hand-made layer with ../ paths, a write through an absolute symlink and a device node
  python3 "$ROOT/tests/fixtures/evil-image.py" "$L" evil-layer

  umoci gc --layout "$L"
  recipe_stamp "$bb" >"$L/.skiff-recipe"
  rm -rf "$OCI_DIR"
  mv "$L" "$OCI_DIR"
  rm -rf "$tmp"
}

ensure_images() {
  local want have=""
  want=$(recipe_stamp "$(busybox_bin)")
  [ -f "$OCI_DIR/.skiff-recipe" ] && have=$(cat "$OCI_DIR/.skiff-recipe")
  if [ "$have" = "$want" ]; then
    log "reusing cached OCI layout $OCI_DIR"
  else
    build_images
  fi
}

# ---------------------------------------------------------------- registries

reg_dir() { echo "$FIXTURE_DIR/registry-$1"; }   # $1 = anon | auth
reg_port() { if [ "$1" = anon ]; then echo "$ANON_PORT"; else echo "$AUTH_PORT"; fi; }

# HTTP status of GET /v2/ (000 when nothing answers).
v2_status() {
  local port=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "http://127.0.0.1:$port/v2/" 2>/dev/null || true
}

port_listening() {
  [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]
}

# Does the registry on this port behave as this fixture's registry of kind $1?
registry_ok() {
  local kind=$1 port
  port=$(reg_port "$kind")
  if [ "$kind" = anon ]; then
    [ "$(v2_status "$port")" = 200 ]
  else
    [ "$(v2_status "$port")" = 401 ] && [ "$(v2_status "$port" -u "$REG_USER:$REG_PASS")" = 200 ]
  fi
}

# pid from the pid file if that process is still our docker-registry.
our_pid() {
  local d pid
  d=$(reg_dir "$1")
  [ -f "$d/pid" ] || return 1
  pid=$(cat "$d/pid")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  case "$(tr '\0' ' ' <"/proc/$pid/cmdline")" in
    *"docker-registry serve $d/config.yml"*) ;;
    *) return 1 ;;
  esac
  echo "$pid"
}

write_config() {
  local kind=$1 d port
  d=$(reg_dir "$kind"); port=$(reg_port "$kind")
  mkdir -p "$d/storage"
  {
    cat <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
  fields:
    service: skiff-test-registry-$kind
storage:
  filesystem:
    rootdirectory: $d/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    if [ "$kind" = auth ]; then
      cat <<YAML
auth:
  htpasswd:
    realm: skiff-test
    path: $d/htpasswd
YAML
    fi
  } >"$d/config.yml"
  if [ "$kind" = auth ]; then
    htpasswd -Bbn "$REG_USER" "$REG_PASS" >"$d/htpasswd"
  fi
}

start_registry() {
  local kind=$1 d port pid i
  d=$(reg_dir "$kind"); port=$(reg_port "$kind")

  if pid=$(our_pid "$kind"); then
    if registry_ok "$kind"; then
      log "registry $kind already running (pid $pid) on 127.0.0.1:$port; reusing"
      return 0
    fi
    die "registry $kind (pid $pid) is running but 127.0.0.1:$port does not answer as expected; see $d/log (try: $0 stop)"
  fi
  rm -f "$d/pid"

  if port_listening "$port" || [ "$(v2_status "$port")" != 000 ]; then
    if registry_ok "$kind"; then
      # Another fixture (other SKIFF_FIXTURE_DIR) serves this port with the same setup.
      log "127.0.0.1:$port already serves a compatible $kind registry not started from $FIXTURE_DIR; using it (stop will not touch it)"
      return 0
    fi
    die "port 127.0.0.1:$port is busy with something that is not a compatible $kind registry; free it or choose other ports with SKIFF_TEST_REGISTRY_PORT / SKIFF_TEST_REGISTRY_AUTH_PORT. Listener: $(ss -ltnpH "sport = :$port" 2>/dev/null)"
  fi

  write_config "$kind"
  log "starting $kind registry on 127.0.0.1:$port (log $d/log)"
  # New session so a terminal's Ctrl-C goes to the test run, whose trap stops us cleanly.
  # 9>&-: the registry must not inherit (and so hold) the fixture lock.
  setsid docker-registry serve "$d/config.yml" >>"$d/log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$d/pid"
  for i in $(seq 1 100); do
    if registry_ok "$kind"; then
      log "registry $kind up (pid $pid)"
      return 0
    fi
    if ! alive "$pid"; then
      rm -f "$d/pid"
      tail -n 20 "$d/log" >&2 || true
      die "registry $kind exited during startup (see $d/log)"
    fi
    sleep 0.1
  done
  tail -n 20 "$d/log" >&2 || true
  die "registry $kind did not answer on 127.0.0.1:$port within 10 s (pid $pid still running; run '$0 stop')"
}

# Alive and not a zombie (a zombie waits here for PID 1 to reap it, which can take seconds).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Stop the registries of the given kinds: SIGTERM all, wait up to 5 s, then SIGKILL.
stop_registries() {
  local kind pid i pids=() kinds=()
  for kind in "$@"; do
    if pid=$(our_pid "$kind"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid"); kinds+=("$kind")
    elif [ -f "$(reg_dir "$kind")/pid" ]; then
      log "registry $kind: stale pid file removed"
    fi
    rm -f "$(reg_dir "$kind")/pid"
  done
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    for _ in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "registry ${kinds[$i]} (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped registry ${kinds[$i]} (pid $pid)"
  done
}

push_images() {
  local name
  for name in "${IMAGES[@]}"; do
    skopeo copy -q --dest-tls-verify=false \
      "oci:$OCI_DIR:$name" "docker://127.0.0.1:$ANON_PORT/$name:latest" >/dev/null
    skopeo copy -q --dest-tls-verify=false --dest-creds "$REG_USER:$REG_PASS" \
      "oci:$OCI_DIR:$name" "docker://127.0.0.1:$AUTH_PORT/$name:latest" >/dev/null
  done
  # The same busybox as a Docker v2 schema2 manifest, for media-type handling tests.
  skopeo copy -q --format v2s2 --dest-tls-verify=false \
    "oci:$OCI_DIR:busybox" "docker://127.0.0.1:$ANON_PORT/busybox-v2s2:latest" >/dev/null
  skopeo copy -q --format v2s2 --dest-tls-verify=false --dest-creds "$REG_USER:$REG_PASS" \
    "oci:$OCI_DIR:busybox" "docker://127.0.0.1:$AUTH_PORT/busybox-v2s2:latest" >/dev/null
  log "pushed ${IMAGES[*]} busybox-v2s2 to 127.0.0.1:$ANON_PORT and 127.0.0.1:$AUTH_PORT"
}

# ---------------------------------------------------------------- commands

with_lock() {
  mkdir -p "$FIXTURE_DIR"
  exec 9>"$FIXTURE_DIR/.lock"
  flock -w 60 9 || die "could not lock $FIXTURE_DIR/.lock within 60 s (another test-fixture.sh running? holders: $(fuser "$FIXTURE_DIR/.lock" 2>/dev/null))"
}

cmd_start() {
  need umoci skopeo docker-registry htpasswd curl ss flock setsid
  [ "$ANON_PORT" != "$AUTH_PORT" ] || die "SKIFF_TEST_REGISTRY_PORT and SKIFF_TEST_REGISTRY_AUTH_PORT must differ"
  with_lock
  ensure_images
  start_registry anon
  start_registry auth
  push_images
}

cmd_stop() {
  mkdir -p "$FIXTURE_DIR"
  with_lock
  stop_registries anon auth
}

cmd_env() {
  echo "export SKIFF_TEST_REGISTRY=127.0.0.1:$ANON_PORT SKIFF_TEST_REGISTRY_AUTH=127.0.0.1:$AUTH_PORT SKIFF_TEST_REGISTRY_USER=$REG_USER SKIFF_TEST_REGISTRY_PASSWORD=$REG_PASS"
  echo "export SKIFF_FIXTURE_DIR=$FIXTURE_DIR SKIFF_TEST_OCI_LAYOUT=$OCI_DIR"
}

cmd_status() {
  local kind pid
  for kind in anon auth; do
    if pid=$(our_pid "$kind"); then
      echo "$kind: pid $pid on 127.0.0.1:$(reg_port "$kind") ($(registry_ok "$kind" && echo answering || echo NOT answering))"
    elif registry_ok "$kind"; then
      echo "$kind: compatible registry on 127.0.0.1:$(reg_port "$kind") not started from $FIXTURE_DIR"
    else
      echo "$kind: not running"
    fi
  done
  [ -f "$OCI_DIR/.skiff-recipe" ] && echo "oci layout: $OCI_DIR ($(cat "$OCI_DIR/.skiff-recipe"))" || echo "oci layout: not built"
}

# Exit 0 iff both registries started from this fixture dir are up and answering.
cmd_running() {
  our_pid anon >/dev/null && our_pid auth >/dev/null && registry_ok anon && registry_ok auth
}

cmd_clean() {
  cmd_stop
  case "$FIXTURE_DIR" in
    /|"") die "refusing to delete '$FIXTURE_DIR'" ;;
  esac
  rm -rf "$FIXTURE_DIR"
  log "removed $FIXTURE_DIR"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  status) cmd_status ;;
  running) cmd_running ;;
  clean) cmd_clean ;;
  *) echo "usage: $0 start|stop|env|status|running|clean" >&2; exit 2 ;;
esac
