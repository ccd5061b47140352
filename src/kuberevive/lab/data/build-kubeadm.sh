#!/usr/bin/env bash
# Builds only the real kubeadm of one Kubernetes version, from the Go module proxy, pinned and version-stamped,
# into $KUBEREVIVE_CACHE/kubeadm-v<VERSION>/kubeadm (default cache /var/cache/kuberevive). Used to compare
# kuberevive's per-minor output with each minor's own kubeadm (tests/integration/test_kubeadm_compare.py).
# A second run with the binary present does nothing. Go is a test dependency only.
#
#   build-kubeadm.sh 1.35.4
#
# Prints the binary's path. Exits 1 with one line when the proxy does not serve that version.
set -euo pipefail
K8S=${1:?usage: build-kubeadm.sh VERSION (e.g. 1.35.4)}
K8S=${K8S#v}
CACHE=${KUBEREVIVE_CACHE:-/var/cache/kuberevive}
OUT="$CACHE/kubeadm-v$K8S"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 GOFLAGS=${GOFLAGS:--mod=mod}
export GOPATH=${GOPATH:-$CACHE/gopath}
export GOCACHE=${GOCACHE:-$CACHE/gocache}
log() { echo "[build-kubeadm] $*" >&2; }
if [ -x "$OUT/kubeadm" ] && [ -f "$OUT/.complete" ]; then echo "$OUT/kubeadm"; exit 0; fi
command -v go >/dev/null || { echo "build-kubeadm: Go is required (https://go.dev/dl) to build kubeadm" >&2; exit 1; }

MINOR=$(cut -d. -f2 <<<"$K8S"); STAGING="0.${K8S#1.}"
T0=$(date +%s)
W="$CACHE/work/kubeadm-v$K8S"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
if ! INFO=$(go mod download -json "k8s.io/kubernetes@v$K8S" 2>&1); then
  echo "build-kubeadm: the Go module proxy does not serve k8s.io/kubernetes@v$K8S: $(tr '\n' ' ' <<<"$INFO")" >&2
  exit 1
fi
GOMOD=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$INFO")
COMMIT=$(sed -n 's/.*"Hash": "\([0-9a-f]\{40\}\)".*/\1/p' <<<"$INFO" | head -1 || true)
printf 'module local.invalid/kubeadmbin\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nrequire k8s.io/kubernetes v%s\n' "$K8S" > go.mod
for m in $(awk '$2=="=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$GOMOD"); do
  go mod edit -replace="$m=$m@v$STAGING"
done
printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kubeadm"\n' > tools.go
log "resolving k8s.io/kubernetes v$K8S modules"
go mod tidy
DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF+=" -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=$DATE"
  [ -n "$COMMIT" ] && LDF+=" -X $p.gitCommit=$COMMIT"
done
mkdir -p "$OUT"
log "building kubeadm v$K8S (cold: several minutes on 2 cores)"
go build -trimpath -tags=selinux,notest -ldflags="$LDF" -o "$OUT/kubeadm" k8s.io/kubernetes/cmd/kubeadm
"$OUT/kubeadm" version -o short | grep -qx "v$K8S" || { echo "build-kubeadm: kubeadm version is not v$K8S" >&2; exit 1; }
log "kubeadm v$K8S built in $(( $(date +%s) - T0 ))s"
touch "$OUT/.complete"
echo "$OUT/kubeadm"
