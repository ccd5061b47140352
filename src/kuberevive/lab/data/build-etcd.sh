#!/usr/bin/env bash
# Builds the real etcd server, etcdctl and etcdutl of one etcd version, from the Go module proxy, into
# $KUBEREVIVE_CACHE/etcd-v<VERSION>/bin (default cache /var/cache/kuberevive). The tests run kuberevive's etcd
# safety checks, streamed snapshots and restores against it as well as against the lab's etcd 3.5.24
# (tests/integration/etcdbin.py finds both). A second run with the binaries present does nothing.
# Go is a test dependency only.
#
#   build-etcd.sh            # 3.6.8, the etcd of kubeadm v1.36 (image 3.6.8-0)
#   build-etcd.sh 3.6.16
#
# Prints the bin directory. Exits 1 with one line when the proxy does not serve that version.
set -euo pipefail
ETCD=${1:-3.6.8}
ETCD=${ETCD#v}
CACHE=${KUBEREVIVE_CACHE:-/var/cache/kuberevive}
OUT="$CACHE/etcd-v$ETCD/bin"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}
export GOPATH=${GOPATH:-$CACHE/gopath}
export GOCACHE=${GOCACHE:-$CACHE/gocache}
log() { echo "[build-etcd] $*" >&2; }
if [ -x "$OUT/etcd" ] && [ -x "$OUT/etcdctl" ] && [ -x "$OUT/etcdutl" ] && [ -f "$OUT/.complete" ]; then
  echo "$OUT"; exit 0
fi
command -v go >/dev/null || { echo "build-etcd: Go is required (https://go.dev/dl) to build etcd" >&2; exit 1; }
T0=$(date +%s)
W="$CACHE/work/etcd36-v$ETCD"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
for m in server etcdctl etcdutl; do
  if ! INFO=$(go mod download -json "go.etcd.io/etcd/$m/v3@v$ETCD" 2>&1); then
    echo "build-etcd: the Go module proxy does not serve go.etcd.io/etcd/$m/v3@v$ETCD: $(tr '\n' ' ' <<<"$INFO")" >&2
    exit 1
  fi
done
# One module graph for the three programs: in 3.6 they share the release's api/client/pkg modules.
printf 'module local.invalid/etcdbins\n\ngo 1.24\n' > go.mod
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/etcdutl/v3"\n)\n' > tools.go
go get "go.etcd.io/etcd/server/v3@v$ETCD" "go.etcd.io/etcd/etcdctl/v3@v$ETCD" "go.etcd.io/etcd/etcdutl/v3@v$ETCD"
go mod tidy -e  # -e: a test-only dependency of a dependency has an ambiguous import
mkdir -p "$OUT"
log "building etcd, etcdctl, etcdutl v$ETCD (cold: a few minutes on 2 cores)"
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
go build -trimpath -ldflags "-s -w" -o "$OUT/etcdctl" go.etcd.io/etcd/etcdctl/v3
go build -trimpath -ldflags "-s -w" -o "$OUT/etcdutl" go.etcd.io/etcd/etcdutl/v3
"$OUT/etcd" --version | grep -q "etcd Version: $ETCD" || { echo "build-etcd: etcd is not $ETCD" >&2; exit 1; }
"$OUT/etcdutl" version | grep -q "etcdutl version: $ETCD" || { echo "build-etcd: etcdutl is not $ETCD" >&2; exit 1; }
log "etcd v$ETCD built in $(( $(date +%s) - T0 ))s"
touch "$OUT/.complete"
echo "$OUT"
