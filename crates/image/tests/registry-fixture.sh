#!/usr/bin/env bash
# Start two throwaway registries on 127.0.0.1 and push busybox:latest to both,
# for the skiff-image integration test.
#
#   usage: registry-fixture.sh WORKDIR ANON_PORT AUTH_PORT
#   needs: docker-registry skopeo umoci busybox-static apache2-utils (Debian)
#
# Prints the environment for the test, e.g.
#   export SKIFF_TEST_REGISTRY=127.0.0.1:15000
#   export SKIFF_TEST_REGISTRY_AUTH=127.0.0.1:15001
#   REGISTRY_PIDS="123 124"
# The auth registry uses htpasswd user `skiff`, password `skiff-pass`.
# Stop the registries with: kill $REGISTRY_PIDS
set -euo pipefail
work=${1:?workdir}; anon=${2:?anon port}; auth=${3:?auth port}
mkdir -p "$work"
cd "$work"

if [ ! -d layout ]; then
  umoci init --layout layout >&2
  umoci new --image layout:latest >&2
  umoci unpack --image layout:latest bundle >&2
  mkdir -p bundle/rootfs/bin bundle/rootfs/tmp bundle/rootfs/etc
  cp /bin/busybox bundle/rootfs/bin/busybox
  for t in sh ls cat echo sleep true false env id wget; do ln -sf busybox "bundle/rootfs/bin/$t"; done
  echo "root:x:0:0:root:/root:/bin/sh" > bundle/rootfs/etc/passwd
  umoci repack --image layout:latest bundle >&2
  umoci config --image layout:latest --config.cmd sh --config.env PATH=/bin >&2
fi

htpasswd -Bbn skiff skiff-pass > htpasswd
for kind in anon auth; do
  port=$anon; [ "$kind" = auth ] && port=$auth
  mkdir -p "store-$kind"
  {
    echo "version: 0.1"
    echo "log: {level: warn}"
    echo "storage: {filesystem: {rootdirectory: $work/store-$kind}, delete: {enabled: true}}"
    echo "http: {addr: 127.0.0.1:$port}"
    [ "$kind" = auth ] && echo "auth: {htpasswd: {realm: skiff, path: $work/htpasswd}}"
  } > "config-$kind.yml"
  docker-registry serve "config-$kind.yml" > "registry-$kind.log" 2>&1 &
  echo $! > "registry-$kind.pid"
done
for port in "$anon" "$auth"; do
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
    [ "$code" = 200 ] || [ "$code" = 401 ] && break
    sleep 0.1
  done
done
skopeo copy -q --dest-tls-verify=false oci:layout:latest "docker://127.0.0.1:$anon/busybox:latest" >&2
skopeo copy -q --dest-tls-verify=false --dest-creds skiff:skiff-pass oci:layout:latest "docker://127.0.0.1:$auth/busybox:latest" >&2
echo "export SKIFF_TEST_REGISTRY=127.0.0.1:$anon"
echo "export SKIFF_TEST_REGISTRY_AUTH=127.0.0.1:$auth"
echo "REGISTRY_PIDS=\"$(cat registry-anon.pid) $(cat registry-auth.pid)\""
