#!/usr/bin/env bash
# Build (once) and cache the binaries the test harness and `make demo` need:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and etcd
# (from the Go module k8s.io/kubernetes and its etcd dependency), the node's
# kubelet and kube-proxy (same module), CoreDNS, MinIO, Helm; Prometheus/promtool,
# containerd, runc and the CNI plugins come from Debian. Idempotent: prints the
# bin dir and exits at once when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
source "$here/versions.env"
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
bin="$cache/tools-$KUBE_VERSION-$(echo "$MINIO_VERSION$HELM_VERSION" | sha1sum | cut -c1-8)/bin"
mkdir -p "$bin"
log() { echo "[cluster-tools] $*" >&2; }
# One build at a time per cache: a second caller (another test run) waits and
# then finds everything built, instead of writing the same binaries at once.
exec 9>"$cache/.cluster-tools.lock"
flock 9
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
export GOPATH=${GOPATH:-$HOME/go} GOCACHE=${GOCACHE:-$HOME/.cache/go-build}

mod="$cache/kube-module-$KUBE_VERSION"
modfile="$GOPATH/pkg/mod/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ldflags="$ldflags -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# The module every Kubernetes binary is built in. k8s.io/kubernetes points its
# staging modules at ./staging: replace each with the published k8s.io/* version
# of the same release.
kube_module() {
  [ -f "$mod/go.mod" ] && return
  mkdir -p "$mod"
  go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
  {
    echo "module kubetune.io/cluster-tools"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$KUBE_STAGING_VERSION"'#p' "$modfile"
    echo ")"
  } > "$mod/go.mod"
}

need_kube=0
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
  [ -x "$bin/$b" ] || need_kube=1
done
if [ "$need_kube" = 1 ]; then
  start=$(date +%s)
  kube_module
  log "building kubernetes $KUBE_VERSION binaries and etcd (cold: several minutes)"
  # etcd: the server release that this Kubernetes release itself depends on.
  etcd_version=$(sed -n 's#^\s*go.etcd.io/etcd/server/v3 \(v[0-9.]*\).*#\1#p' "$modfile" | head -1)
  (
    cd "$mod"
    go get "k8s.io/kubernetes@$KUBE_VERSION" "go.etcd.io/etcd/server/v3@$etcd_version" >"$mod/go-get.log" 2>&1 \
      || { cat "$mod/go-get.log" >&2; exit 1; }
    go build -trimpath -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  )
  log "kubernetes + etcd built in $(( $(date +%s) - start ))s"
fi

# The test cluster's node (tests/harness/node.py): kubelet and kube-proxy from
# the same module. Their packages pull in dependencies the control plane's do
# not (cAdvisor, the proxiers' netlink pieces): `go get` them to fill go.sum.
if [ ! -x "$bin/kubelet" ] || [ ! -x "$bin/kube-proxy" ]; then
  start=$(date +%s)
  kube_module
  log "building kubelet and kube-proxy $KUBE_VERSION (cold: a few minutes)"
  (
    cd "$mod"
    go get "k8s.io/kubernetes@$KUBE_VERSION" \
      "k8s.io/kubernetes/pkg/kubelet@$KUBE_VERSION" "k8s.io/kubernetes/pkg/kubelet/server@$KUBE_VERSION" \
      "k8s.io/kubernetes/pkg/proxy/nftables@$KUBE_VERSION" "k8s.io/kubernetes/pkg/proxy/util/nfacct@$KUBE_VERSION" \
      "k8s.io/kubernetes/pkg/proxy/conntrack@$KUBE_VERSION" "k8s.io/kubernetes/pkg/proxy/ipvs/util@$KUBE_VERSION" \
      >"$mod/go-get-node.log" 2>&1 || { cat "$mod/go-get-node.log" >&2; exit 1; }
    go build -trimpath -ldflags "$ldflags" -o "$bin/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  )
  log "kubelet + kube-proxy built in $(( $(date +%s) - start ))s"
fi
# CoreDNS answers Service and pod names in the test cluster (cluster.local).
if [ "$(cat "$bin/.coredns-version" 2>/dev/null)" != "$COREDNS_VERSION" ] || [ ! -x "$bin/coredns" ]; then
  start=$(date +%s)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  echo "$COREDNS_VERSION" >"$bin/.coredns-version"
  log "coredns built in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$bin/helm" ]; then
  start=$(date +%s)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "helm built in $(( $(date +%s) - start ))s"
fi
if [ ! -x "$bin/minio" ]; then
  start=$(date +%s)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  log "minio built in $(( $(date +%s) - start ))s"
fi
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing prometheus from Debian"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends prometheus >/dev/null 2>&1) \
    || (apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends prometheus >/dev/null)
  # Debian's package starts a system service on install where it can; we run our own.
  # (never pkill by name: other users of this machine may run their own Prometheus)
  (service prometheus stop || true) >/dev/null 2>&1
fi
# Linked to the system's binaries: looked up without $bin on PATH (where a caller that
# exported it would find these very links, and `ln` would make each point at itself).
system_path=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$bin" | paste -sd: -)
for b in prometheus promtool; do ln -sf "$(PATH=$system_path command -v $b)" "$bin/$b"; done
# The node's container runtime and pod network: containerd, runc, the CNI
# plugins (bridge, host-local, loopback, portmap), iptables for kube-proxy and a
# static busybox (the node tests' toolbox image).
# Our own containerd is started by the harness (its config, root and state):
# the package's system service is stopped where the install started one.
node_pkgs=()
command -v containerd >/dev/null || node_pkgs+=(containerd)
command -v runc >/dev/null || node_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || node_pkgs+=(containernetworking-plugins)
command -v iptables-restore >/dev/null || node_pkgs+=(iptables)
command -v nsenter >/dev/null || node_pkgs+=(util-linux)
[ -x /bin/busybox ] || node_pkgs+=(busybox-static)  # the node tests' toolbox image
if [ "${#node_pkgs[@]}" -gt 0 ]; then
  log "installing ${node_pkgs[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${node_pkgs[@]}" >/dev/null 2>&1) \
    || (apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${node_pkgs[@]}" >/dev/null)
  (service containerd stop || true) >/dev/null 2>&1
fi
echo "$bin"
