#!/usr/bin/env bash
# Builds the real Kubernetes, etcd and crictl binaries used by the tests and the lab, from the Go
# module proxy, pinned and version-stamped, into a cache directory keyed by version.
# A second run with the binaries present does nothing. Go is a test/lab dependency only.
#
#   KUBEREVIVE_CACHE  cache root (default /var/cache/kuberevive)
#   K8S_VERSION default 1.37.2; ETCD_VERSION default 3.7.0 (server: kubeadm v1.37's); ETCDCTL_VERSION default 3.7.4;
#   CRICTL_VERSION default 1.34.0
#
# Besides the upstream programs it builds the lab's test workload `labapp` (labapp/ beside this script, standard
# library only) into the same directory; it is rebuilt whenever its source changes (.labapp.sha256).
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S=${K8S_VERSION:-1.37.2}
ETCD=${ETCD_VERSION:-3.7.0}
ETCDCTL=${ETCDCTL_VERSION:-3.7.4}
CRICTL=${CRICTL_VERSION:-1.34.0}
CACHE=${KUBEREVIVE_CACHE:-/var/cache/kuberevive}
OUT="$CACHE/k8s-v$K8S-etcd-v$ETCD/bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=${GOPATH:-$CACHE/gopath}
export GOCACHE=${GOCACHE:-$CACHE/gocache}
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kubectl kube-proxy)
ALL=("${K8S_CMDS[@]}" etcd etcdctl etcdutl crictl)

have_all() { for b in "${ALL[@]}"; do [ -x "$OUT/$b" ] || return 1; done; }
labapp_sum() { cat "$LAB_DIR/labapp/go.mod" "$LAB_DIR/labapp/"*.go | sha256sum | cut -d' ' -f1; }
labapp_ok() { [ -x "$OUT/labapp" ] && [ "$(cat "$OUT/.labapp.sha256" 2>/dev/null)" = "$(labapp_sum)" ]; }
if have_all && labapp_ok && [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "build-binaries: Go is required (https://go.dev/dl) to build the test binaries" >&2; exit 1; }
mkdir -p "$OUT"
log() { echo "[build-binaries] $*" >&2; }

# --- Kubernetes ---------------------------------------------------------------------------
missing=(); for b in "${K8S_CMDS[@]}"; do [ -x "$OUT/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  MINOR=$(cut -d. -f2 <<<"$K8S"); STAGING="0.${K8S#1.}"
  T0=$(date +%s)
  INFO=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@v$K8S")
  GOMOD=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$INFO")
  COMMIT=$(sed -n 's/.*"Hash": "\([0-9a-f]\{40\}\)".*/\1/p' <<<"$INFO" | head -1 || true)
  W="$CACHE/work/k8s-v$K8S"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
  printf 'module local.invalid/k8sbins\n\ngo 1.24.0\n\ngodebug default=go1.24\n\nrequire k8s.io/kubernetes v%s\n' "$K8S" > go.mod
  for m in $(awk '$2=="=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$GOMOD"); do
    go mod edit -replace="$m=$m@v$STAGING"
  done
  { echo '//go:build tools'; echo; echo 'package tools'; echo; echo 'import ('
    for c in "${K8S_CMDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done; echo ')'; } > tools.go
  log "resolving k8s.io/kubernetes v$K8S modules"
  go mod tidy
  DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF+=" -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=$DATE"
    [ -n "$COMMIT" ] && LDF+=" -X $p.gitCommit=$COMMIT"
  done
  pkgs=(); for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "building ${missing[*]} (cold: tens of minutes on 2 cores)"
  go build -trimpath -tags=selinux,notest -ldflags="$LDF" -o "$OUT/" "${pkgs[@]}"
  log "kubernetes built in $(( $(date +%s) - T0 ))s"
fi

# --- etcd ---------------------------------------------------------------------------------
# The server is pinned to what kubeadm v1.33.13 expects (image etcd:3.5.24-0). The Go module proxy
# does not serve etcdctl/etcdutl at v3.5.24, so those client tools are built at ETCDCTL_VERSION in a
# module of their own (one module graph would raise the server's etcd API version along with them).
if [ ! -x "$OUT/etcd" ]; then
  T0=$(date +%s)
  W="$CACHE/work/etcd-v$ETCD"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
  printf 'module local.invalid/etcdbins\n\ngo 1.24\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  go get "go.etcd.io/etcd/server/v3@v$ETCD"
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
  log "etcd built in $(( $(date +%s) - T0 ))s"
fi
if [ ! -x "$OUT/etcdctl" ] || [ ! -x "$OUT/etcdutl" ]; then
  W="$CACHE/work/etcdctl-v$ETCDCTL"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
  printf 'module local.invalid/etcdctlbins\n\ngo 1.24\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/etcdutl/v3"\n)\n' > tools.go
  go get "go.etcd.io/etcd/etcdctl/v3@v$ETCDCTL" "go.etcd.io/etcd/etcdutl/v3@v$ETCDCTL"
  go mod tidy -e  # -e: a test-only dependency of a dependency has an ambiguous import
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcdctl" go.etcd.io/etcd/etcdctl/v3
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcdutl" go.etcd.io/etcd/etcdutl/v3
fi

# --- crictl -------------------------------------------------------------------------------
# The proxy serves cri-tools only at v1.34.0 (v1.33.x is refused); crictl speaks CRI v1, which
# containerd 1.6 serves. Built through a wrapper module: `go install .../cmd/crictl@v` stops on the
# proxy's 403 for the non-module path prefix.
if [ ! -x "$OUT/crictl" ]; then
  W="$CACHE/work/crictl-v$CRICTL"; rm -rf "$W"; mkdir -p "$W"; cd "$W"
  printf 'module local.invalid/crictlbin\n\ngo 1.24\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/cri-tools/cmd/crictl"\n' > tools.go
  go get "sigs.k8s.io/cri-tools@v$CRICTL"
  go mod tidy -e
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL" -o "$OUT/crictl" \
    sigs.k8s.io/cri-tools/cmd/crictl
fi

# --- labapp (the lab's test workload) ------------------------------------------------------
if ! labapp_ok; then
  (cd "$LAB_DIR/labapp" && go build -trimpath -ldflags "-s -w" -o "$OUT/labapp" .)
  labapp_sum > "$OUT/.labapp.sha256"
  log "labapp built"
fi

"$OUT/kubelet" --version | grep -qx "Kubernetes v$K8S" || { echo "build-binaries: kubelet --version is not v$K8S" >&2; exit 1; }
"$OUT/etcd" --version | grep -q "etcd Version: $ETCD" || { echo "build-binaries: etcd is not $ETCD" >&2; exit 1; }
"$OUT/kube-proxy" --version | grep -qx "Kubernetes v$K8S" || { echo "build-binaries: kube-proxy --version is not v$K8S" >&2; exit 1; }
touch "$OUT/.complete"
echo "$OUT"
