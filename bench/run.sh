#!/usr/bin/env bash
# Skiff benchmark suite (docs/BENCHMARKS.md): Skiff and its peers in one run, same images,
# same local registry.
#
#   bash bench/run.sh [--quick] [--no-build] [--bin PATH] [--count N] [--density N]
#                    [--api N] [--restart N] [--keep-log FILE] [--no-peer] [scenario...]
#
# Scenarios (default: cold-start burst density api restart):
#   cold-start  N sequential creates (default 50, --quick 5) of busybox-httpd with a public IP
#               and port 80: create→Running and create→first byte; peers `podman run -d -p`
#               and `crun run` of /bin/true (the floor)
#   burst       N groups at once (default 100, --quick 10), time until all Running; peer N
#               concurrent `podman run -d`
#   density     N idle groups (default 100, --quick 5; the issue's number is 500: --density 500):
#               daemon RSS and supervisor PSS per group; peer conmon per podman container
#   api         GET and list latency/throughput (8 clients, 5 s each) while N groups exist
#               (default 100, --quick 5; the issue's number is 200: --api 200); no peer
#   restart     N live groups (default 100, --quick 5; the issue's 500: --restart 500), SIGTERM and
#               restart the daemon: time until the API answers and all groups show Running
#   sandbox     cold-start (N, default 30, --quick 3; no peer) on a daemon with the default sandbox,
#               with --userns false, with --seccomp false and with both: what each layer costs
#   pull        first pull+unpack of a ~210 MB, 4-layer image from Debian packages (bench/pull-image.sh)
#               into an empty image cache, N times (default 3, --quick 1), then an image sharing
#               two of its layers; peers `podman pull`, `skopeo copy` and the raw-copy bound
#               (every blob fetched from the registry and fsynced, nothing unpacked)
# --keep-log FILE copies the server's log there before the cleanup removes it. --no-peer
# measures Skiff alone (for profiling; the published tables always have their peer).
# --count N overrides N of cold-start and burst. --bin PATH: use this skiff binary and do not
# build (CI's smoke run uses the debug build it already has; its timings mean nothing).
#
# What it does: builds the release binary (unless --no-build), starts the registry fixture
# (scripts/test-fixture.sh), creates the network namespace skfbench-PID and runs inside it (via
# `nsenter --net`) a second registry on the fixture's storage at 127.0.0.1:5100, a `skiff server`
# with networking on, every client and the podman/crun peers, so the host's interfaces and
# firewall are never touched. Tables go to stdout; JSON to bench/results/latest.json (one
# object per scenario). Everything it started (server, groups, registry, podman containers
# named skfbench-PID-*, crun containers, the namespace, state dirs) is removed on exit.
# Timings are printed, never asserted.
set -euo pipefail
exec </dev/null

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=0; BUILD=1; BIN_ARG=""; COUNT=""; DENSITY=""; APIN=""; RESTARTN=""; KEEP_LOG=""; NO_PEER=0; SCENARIOS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --bin) BIN_ARG=$2; BUILD=0; shift ;;
    --count) COUNT=$2; shift ;;
    --density) DENSITY=$2; shift ;;
    --api) APIN=$2; shift ;;
    --restart) RESTARTN=$2; shift ;;
    --keep-log) KEEP_LOG=$2; shift ;;
    --no-peer) NO_PEER=1 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    cold-start|burst|density|api|restart|pull|sandbox) SCENARIOS+=("$1") ;;
    *) echo "bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(cold-start burst density api restart pull sandbox)
if [ "$QUICK" = 1 ]; then N_COLD=${COUNT:-5}; N_BURST=${COUNT:-10}; N_DENS=${DENSITY:-5}; N_API=${APIN:-5}; N_RESTART=${RESTARTN:-5}; N_PULL=1; N_SANDBOX=3
else N_COLD=${COUNT:-50}; N_BURST=${COUNT:-100}; N_DENS=${DENSITY:-100}; N_API=${APIN:-100}; N_RESTART=${RESTARTN:-100}; N_PULL=3; N_SANDBOX=30; fi

log() { echo "bench: $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }
for c in ip nsenter jq crun curl docker-registry; do
  command -v "$c" >/dev/null 2>&1 || die "missing $c (run scripts/install-deps.sh)"
done
HAVE_PODMAN=1; command -v podman >/dev/null 2>&1 || { HAVE_PODMAN=0; log "podman not found: peers not measured"; }
[ "$NO_PEER" = 0 ] || HAVE_PODMAN=0

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN_ARG:-$TARGET/release/skiff}
if [ "$BUILD" = 1 ]; then
  log "building the release binary"
  cargo build --release -p skiff >&2
fi
[ -x "$BIN" ] || die "$BIN missing (build with cargo build --release -p skiff)"

TAG=skfbench-$$
NS=$TAG
# Short paths: supervisors' unix sockets live beneath the data dir.
WORK=/tmp/$TAG
RUN=/run/$TAG
CG=$TAG
PORT=18090
RG=skiff-bench
RESULTS=$ROOT/bench/results
mkdir -p "$WORK" "$RESULTS"
SERVER_PID=""; REG_PID=""
IN_NS=(nsenter "--net=/run/netns/$NS")
PODMAN_CONF=$WORK/containers.conf
# podman's defaults fail on a host without systemd whose root lacks CAP_SYS_RESOURCE.
printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$PODMAN_CONF"
export CONTAINERS_CONF=$PODMAN_CONF
export SKIFF_SERVER=http://127.0.0.1:$PORT SKIFF_DATA_DIR=$WORK/data

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # Groups left by a failed scenario: delete them through the API while it is up.
    "${IN_NS[@]}" "$BIN" group delete -g "$RG" --yes >/dev/null 2>&1
    kill -TERM "$SERVER_PID"; for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  [ -z "$KEEP_LOG" ] || cp "$WORK/server.log" "$KEEP_LOG"
  # Last resort: supervisors of our data dir that the API did not delete (ours, by pid).
  local pid
  for pid in $(pgrep -f "supervisor --group-dir $WORK/" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  if [ "$HAVE_PODMAN" = 1 ]; then
    local names
    names=$(podman ps -a --format '{{.Names}}' 2>/dev/null | grep "^$TAG-" || true)
    # shellcheck disable=SC2086
    [ -z "$names" ] || "${IN_NS[@]}" podman rm -f -t 0 $names >/dev/null 2>&1
  fi
  for id in $(crun --root "$RUN/crun" list -q 2>/dev/null); do crun --root "$RUN/crun" delete -f "$id" >/dev/null 2>&1; done
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null; fi
  # Mounts a killed server may have left beneath our dirs, deepest first.
  awk -v w="$WORK/" -v r="$RUN/" 'index($5, w) == 1 || index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
  ip netns del "$NS" 2>/dev/null
  # The server's (now empty) cgroup parent, in every hierarchy, children first.
  for d in /sys/fs/cgroup/"$CG" /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG-crun" /sys/fs/cgroup/*/"$CG-crun"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "$WORK" "$RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "registry fixture"
bash scripts/test-fixture.sh start >&2
FIXTURE_DIR=${SKIFF_FIXTURE_DIR:-/tmp/skiff-fixture}
REG_CONF=$FIXTURE_DIR/registry-anon/config.yml
[ -f "$REG_CONF" ] || die "$REG_CONF missing: the anonymous registry was not started by this fixture"
REG_ADDR=127.0.0.1:${SKIFF_TEST_REGISTRY_PORT:-5100}
IMAGE=$REG_ADDR/busybox-httpd:latest

ip netns add "$NS"
"${IN_NS[@]}" ip link set lo up
# A second registry inside the namespace serves the fixture's storage read-only (pulls only), so
# the namespace needs no link to the host.
"${IN_NS[@]}" docker-registry serve "$REG_CONF" >"$WORK/registry.log" 2>&1 &
REG_PID=$!

SERVER_EXTRA=()
start_server() {
"${IN_NS[@]}" "$BIN" server --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --run-dir "$RUN" \
  --cgroup-parent "$CG" --insecure-http --dns-listen 127.0.0.1:53 --dns-zone skiff.test \
  --stop-grace-ms 300 --rate-limit 1000000 "${SERVER_EXTRA[@]}" >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
}
wait_server() {
for _ in $(seq 300); do
  if [ -f "$WORK/data/admin.token" ] && "${IN_NS[@]}" curl -fsS -o /dev/null "http://$REG_ADDR/v2/" 2>/dev/null \
     && "${IN_NS[@]}" curl -sS -o /dev/null "$SKIFF_SERVER/" 2>/dev/null; then return 0; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$WORK/server.log" >&2; die "skiff server exited"; }
  sleep 0.1
done
die "skiff server did not answer within 30 s"
}
log "skiff server in netns $NS"
start_server
wait_server

PEER=podman; [ "$HAVE_PODMAN" = 1 ] || PEER=none
COMMON=(--image "$IMAGE" --peer "$PEER" --peer-prefix "$TAG" -g "$RG")

# crun run of /bin/true in a bundle of one static busybox: the floor for a cold container.
crun_floor() {
  local n=$1 b=$WORK/crun-true bb i t0 t1
  bb=$(command -v busybox) || { log "no busybox: crun floor skipped"; return 0; }
  mkdir -p "$b/rootfs/bin"; cp "$bb" "$b/rootfs/bin/busybox"; ln -sf busybox "$b/rootfs/bin/true"
  rm -f "$b/config.json"; (cd "$b" && crun spec)
  jq '.process.args = ["/bin/true"] | .process.terminal = false | .linux.cgroupsPath = "/'"$CG"'-crun"' "$b/config.json" >"$b/c.json" && mv "$b/c.json" "$b/config.json"
  : >"$WORK/crun.ms"
  for i in $(seq 0 "$n"); do
    t0=$(date +%s%N)
    "${IN_NS[@]}" crun --root "$RUN/crun" run -b "$b" "$TAG-true-$i" >/dev/null
    t1=$(date +%s%N)
    # The first run warms the page cache; not measured.
    [ "$i" = 0 ] || echo "$(( (t1 - t0) / 1000 ))" >>"$WORK/crun.ms"
  done
  sort -n "$WORK/crun.ms" | awk '{ v[NR] = $1 / 1000 } END {
      split("0.5 0.9 0.99", q, " "); for (k = 1; k <= 3; k++) { r = int(q[k] * NR); if (r < q[k] * NR) r++; if (r < 1) r = 1; p[k] = v[r] }
      printf "crun run /bin/true (floor)  n=%d  median %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms\n", NR, p[1], p[2], p[3], v[NR]
      printf "{\"scenario\":\"crun-floor\",\"count\":%d,\"median_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n", NR, p[1], p[2], p[3], v[NR] > "/dev/stderr" }' \
    2>"$WORK/result-crun-floor.json"
}

# The pull scenario: Skiff into an empty cache (the server restarted on an empty image store
# before each sample), then the peers on the same bytes of the same registry.
pull_scenario() {
  local n=$1 i a=$REG_ADDR/pull-a:latest b=$REG_ADDR/pull-b:latest
  bash bench/pull-image.sh "127.0.0.1:${SKIFF_TEST_REGISTRY_PORT:-5100}"
  local raw=$WORK/pull-raw samples=$WORK/pull-samples.jsonl peers=$WORK/pull-peers.txt
  : >"$samples"; : >"$peers"
  local blobs
  blobs=$("${IN_NS[@]}" skopeo inspect --raw --tls-verify=false "docker://$a" | jq -r '.config.digest, .layers[].digest')
  local bytes
  bytes=$("${IN_NS[@]}" skopeo inspect --raw --tls-verify=false "docker://$a" | jq '[.config.size, .layers[].size] | add')
  for i in $(seq "$n"); do
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK/data/images"
    start_server; wait_server
    local before
    before=$(grep -c '"GET /v2/pull-b/blobs/sha256' "$WORK/registry.log" || true)
    "${IN_NS[@]}" "$BIN" bench pull --image "$a" --second-image "$b" -g "$RG" >>"$samples"
    echo "pull-b-blob-gets $(( $(grep -c '"GET /v2/pull-b/blobs/sha256' "$WORK/registry.log" || true) - before ))" >>"$peers"
    # The raw-copy bound: the same blobs over the same loopback into files, fsynced, one at a
    # time per blob but all blobs at once (as Skiff fetches layers concurrently).
    rm -rf "$raw"; mkdir -p "$raw"
    local t0 t1 d fetches=()
    t0=$(date +%s%N)
    for d in $blobs; do
      "${IN_NS[@]}" curl -sf -o "$raw/${d#sha256:}" "http://$REG_ADDR/v2/pull-a/blobs/$d" &
      fetches+=($!)
    done
    wait "${fetches[@]}"
    sync -f "$raw"
    t1=$(date +%s%N)
    echo "raw $(( (t1 - t0) / 1000 ))" >>"$peers"
    if [ "$HAVE_PODMAN" = 1 ]; then
      "${IN_NS[@]}" podman rmi -f "$a" >/dev/null 2>&1 || true
      t0=$(date +%s%N)
      "${IN_NS[@]}" podman pull -q --tls-verify=false "$a" >/dev/null
      t1=$(date +%s%N)
      echo "podman $(( (t1 - t0) / 1000 ))" >>"$peers"
      "${IN_NS[@]}" podman rmi -f "$a" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK/pull-skopeo"
    t0=$(date +%s%N)
    "${IN_NS[@]}" skopeo copy -q --src-tls-verify=false "docker://$a" "oci:$WORK/pull-skopeo:a"
    t1=$(date +%s%N)
    echo "skopeo $(( (t1 - t0) / 1000 ))" >>"$peers"
    rm -rf "$WORK/pull-skopeo" "$raw"
  done
  python3 - "$samples" "$peers" "$bytes" "$WORK/result-pull.json" <<'PY'
import json, sys
samples = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peers = {}
for l in open(sys.argv[2]):
    k, v = l.split()
    peers.setdefault(k, []).append(float(v) / 1000 if k != "pull-b-blob-gets" else int(v))
size_mb = int(sys.argv[3]) / 1e6
def med(xs):
    xs = sorted(xs); return xs[len(xs) // 2] if xs else None
a = [s["pull_ms"] for s in samples[0::2]]
b = [s["pull_ms"] for s in samples[1::2]]
rows = [("skiff pull+unpack (pull-a, empty cache)", med(a))]
for k, label in [("raw", "raw copy of the same blobs (bound)"), ("podman", "podman pull"), ("skopeo", "skopeo copy (no unpack)")]:
    if peers.get(k):
        rows.append((label, med(peers[k])))
print(f"pull-a: {size_mb:.0f} MB compressed in 4 layers; {len(a)} sample(s), medians")
print(f"{'':44} {'ms':>9} {'MB/s':>8} {'skiff/x':>8}")
for label, v in rows:
    print(f"{label:44} {v:9.1f} {size_mb / (v / 1000):8.1f} {med(a) / v:7.2f}x")
print(f"skiff throughput vs the raw-copy bound: {100 * med(peers['raw']) / med(a):.0f}% (target >= 80%)")
if b:
    gets = peers.get("pull-b-blob-gets", [])
    print(f"pull-b after pull-a (2 of its 3 layers cached): {med(b):.1f} ms; blobs pull-b fetched: {gets} (its new layer and config only)")
json.dump({"scenario": "pull", "bytes": int(sys.argv[3]), "skiff_pull_ms": a, "skiff_second_pull_ms": b,
           "peers_ms": {k: v for k, v in peers.items() if k != "pull-b-blob-gets"},
           "second_image_blob_gets": peers.get("pull-b-blob-gets", []), "samples": samples}, open(sys.argv[4], "w"))
PY
}

# What the sandbox's layers cost: the same cold-start on a daemon with each turned off.
sandbox_scenario() {
  local n=$1 label out=$WORK/sandbox.txt
  : >"$out"
  for label in default no-userns no-seccomp neither; do
    case $label in
      default) SERVER_EXTRA=() ;;
      no-userns) SERVER_EXTRA=(--userns false) ;;
      no-seccomp) SERVER_EXTRA=(--seccomp false) ;;
      neither) SERVER_EXTRA=(--userns false --seccomp false) ;;
    esac
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    start_server; wait_server
    "${IN_NS[@]}" "$BIN" bench cold-start --image "$IMAGE" --peer none -g "$RG" -n "$n" --json-out "$WORK/sandbox-$label.json" >/dev/null
    echo "$label $(jq '.rows[] | select(.name | startswith("skiff create")) | select(.name | contains("Running")) | .stats.median_ms' "$WORK/sandbox-$label.json")" >>"$out"
  done
  SERVER_EXTRA=()
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  start_server; wait_server
  python3 - "$out" "$WORK/result-sandbox.json" "$n" <<'PY'
import json, sys
m = dict((k, float(v)) for k, v in (l.split() for l in open(sys.argv[1]) if l.strip()))
base = m["default"]
print(f"create→Running medians, {sys.argv[3]} starts each (the same daemon binary, restarted per line)")
print(f"{'daemon':30} {'median ms':>10} {'vs default':>11}")
for k, label in [("default", "default sandbox"), ("no-userns", "--userns false"), ("no-seccomp", "--seccomp false"), ("neither", "--userns false --seccomp false")]:
    print(f"{label:30} {m[k]:10.1f} {m[k] - base:+10.1f}")
print(f"user namespaces cost {base - m['no-userns']:+.1f} ms, seccomp {base - m['no-seccomp']:+.1f} ms, both {base - m['neither']:+.1f} ms (target <= 5 ms)")
json.dump({"scenario": "sandbox", "count": int(sys.argv[3]), "median_ms": m}, open(sys.argv[2], "w"))
PY
}

for s in "${SCENARIOS[@]}"; do
  echo; echo "== $s"
  case "$s" in
    cold-start)
      "${IN_NS[@]}" "$BIN" bench cold-start "${COMMON[@]}" -n "$N_COLD" --json-out "$WORK/result-cold-start.json"
      crun_floor "$N_COLD" || log "crun floor not measured" ;;
    burst)
      "${IN_NS[@]}" "$BIN" bench burst "${COMMON[@]}" -n "$N_BURST" --json-out "$WORK/result-burst.json" ;;
    density)
      "${IN_NS[@]}" "$BIN" bench density "${COMMON[@]}" -n "$N_DENS" --daemon-pid "$SERVER_PID" \
        --bench-data-dir "$WORK/data" --json-out "$WORK/result-density.json" ;;
    api)
      "${IN_NS[@]}" "$BIN" bench api "${COMMON[@]}" -n "$N_API" --json-out "$WORK/result-api.json" ;;
    restart)
      log "restart: starting $N_RESTART groups"
      "${IN_NS[@]}" "$BIN" bench density --image "$IMAGE" --peer none -g "$RG" -n "$N_RESTART" --keep \
        --daemon-pid "$SERVER_PID" --bench-data-dir "$WORK/data" >/dev/null
      # SIGTERM: the daemon stops; the groups' supervisors keep running and are re-adopted.
      kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
      T0=$(date +%s%N)
      start_server
      "${IN_NS[@]}" "$BIN" bench wait-all -g "$RG" -n "$N_RESTART" --since-unix-ns "$T0" --json-out "$WORK/result-restart.json"
      "${IN_NS[@]}" "$BIN" group delete -g "$RG" --yes >/dev/null ;;
    pull)
      pull_scenario "$N_PULL" ;;
    sandbox)
      sandbox_scenario "$N_SANDBOX" ;;
  esac
done

jq -s --arg date "$(date -u +%FT%TZ)" --arg host "$(uname -srm); $(nproc) cpus; $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
  --arg rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" --argjson quick "$QUICK" \
  '{date: $date, machine: $host, commit: $rev, quick: ($quick == 1), scenarios: .}' "$WORK"/result-*.json >"$RESULTS/latest.json"
echo; log "JSON: $RESULTS/latest.json (server log was $WORK/server.log; removed on exit)"
# The daemon's own view of the last starts (ANSI colours stripped).
sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" | grep -o 'supervisor started.*elapsed_ms=[0-9.]*' | tail -3 >&2 || true
