# Sourced by hack/images/*.sh: where images are built and kept, and the flags
# buildah and podman need on this kind of host. One place for both, so a test
# that runs a built image sees the same storage the build wrote.
#
# - Storage: containers-storage (overlay) under $KUBETUNE_CACHE/containers,
#   outside the repo, shared by every checkout on the machine.
# - runc, not crun: crun refuses this host's hybrid cgroup v1 hierarchy;
#   cgroupfs, not systemd: no systemd here.
# - Explicit ulimits at or below the hard limits: podman/buildah otherwise ask
#   for more open files than this host allows (EPERM).
# - Host network for builds (pip and apt fetch from their registries): the
#   default CNI bridge would take a private range (10.88/16), which we never use.
# - TMPDIR: buildah and podman stage layers there while they commit or push;
#   kept beside the storage (not /var/tmp) and emptied by build.sh.
# - No pip cache inside builds: the layers that download are cached, and a
#   re-download of torch (only when its pin changes) takes about half a minute
#   where keeping the wheels would cost about 4 GB of disk.
KUBETUNE_CACHE=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
images_cache=$KUBETUNE_CACHE/images
storage_root=$KUBETUNE_CACHE/containers/storage
storage_runroot=$KUBETUNE_CACHE/containers/run
images_tmp=$KUBETUNE_CACHE/containers/tmp
# (nproc above about 32k fails in runc's init here even under the hard limit.)
ulimits=(--ulimit "nofile=$(( $(ulimit -Hn) < 65536 ? $(ulimit -Hn) : 65536 ))" --ulimit "nproc=$(( $(ulimit -Hu) < 16384 ? $(ulimit -Hu) : 16384 ))")
# Builds trust what this host trusts: its CA bundle is mounted over the
# image's for RUN steps only (never committed), so pip and apt work behind a
# TLS-inspecting proxy. (Debian's pip reads the system bundle.)
build_trust=()
[ -f /etc/ssl/certs/ca-certificates.crt ] && build_trust=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
storage_flags=(--root "$storage_root" --runroot "$storage_runroot" --storage-driver overlay)

images_log() { echo "[images] $*" >&2; }

# The repositories kubetune's images are tagged in (build.sh), and every image
# some checkout's refs file names (what build.sh last built there).
image_repos=(ghcr.io/kubetune/operator ghcr.io/kubetune/trainer localhost/kubetune-test/vllm-cpu)
images_in_refs_files() { sed -n 's/^KUBETUNE_[A-Z]*_IMAGE=//p' "$images_cache"/refs/*.env 2>/dev/null || true; }

# Debian's buildah (1.28), podman (4.3), runc and mmdebstrap, installed once.
ensure_image_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v flock >/dev/null || missing+=(util-linux)
  if [ "${#missing[@]}" -gt 0 ]; then
    images_log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    # (hack/test.sh runs this beside the cluster tools' own apt-get: wait for the lock.)
    local apt=(apt-get -o DPkg::Lock::Timeout=300)
    ("${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1) \
      || ("${apt[@]}" update -q >/dev/null && "${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" >/dev/null)
  fi
  mkdir -p "$images_cache" "$storage_root" "$storage_runroot" "$images_tmp"
}

bh() { TMPDIR=$images_tmp buildah "${storage_flags[@]}" "$@"; }
pm() { TMPDIR=$images_tmp podman "${storage_flags[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }
