#!/usr/bin/env bash
# `make demo`: the main job end to end on a local control plane, tiny model, CPU.
#
#   control plane + MinIO + pod runner (reused if running) -> CRDs -> operator
#   -> tiny model + dataset in s3://kubetune-demo -> examples/quickstart.yaml
#   -> live status until it ends -> where the adapter, report and metrics are.
#
# Idempotent and non-interactive: a second run reuses the cluster and the cached
# tiny model, replaces the previous demo job and its checkpoints, and trains again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

venv=$(hack/python-env.sh)
py="$venv/bin/python"
KUBETUNE_TOOLS_BIN=$(bash hack/cluster-tools/build.sh | tail -1)
export KUBETUNE_TOOLS_BIN PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
ns=kubetune-demo
bucket=kubetune-demo

say "local control plane, MinIO and pod runner"
if ! env_lines=$("$py" -m tests.harness.cluster env 2>/dev/null); then
  env_lines=$("$py" -m tests.harness.cluster up | grep '^export ')
fi
eval "$env_lines"
run_dir=${KUBETUNE_RUN_DIR:-$cache/run}
k() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }

say "CRDs"
k apply --server-side --force-conflicts -f crds/finetunejob.yaml -f charts/kubetune/crds/kopf-peering.yaml >/dev/null
k wait --for=condition=Established crd/finetunejobs.kubetune.io --timeout=60s >/dev/null
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
# The S3 Secret the quickstart job uses by default (operator setting KUBETUNE_DEFAULT_S3_SECRET).
k -n "$ns" create secret generic kubetune-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" --dry-run=client -o yaml | k apply -f - >/dev/null

say "previous demo job (if any) removed"
k -n "$ns" delete ftj quickstart --ignore-not-found --wait=true >/dev/null
k -n "$ns" wait --for=delete job/quickstart-train --timeout=60s >/dev/null 2>&1 || true

say "tiny model and dataset -> s3://$bucket (models/tiny-llama, data/train.jsonl)"
"$py" - "$cache/demo-assets" "$bucket" "$ns" <<'EOF'
import sys
from pathlib import Path
import boto3
assets, bucket, ns = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if not (assets / "model" / "config.json").exists():
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset, make_tiny_model
    make_tiny_model(assets / "model")
    make_tiny_dataset(assets / "train.jsonl", fmt="completion", n=192)
s3 = boto3.client("s3")
if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=bucket)
# A fresh run: drop the previous demo's checkpoints and outputs.
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{ns}/quickstart/"):
    for obj in page.get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
for path in (assets / "model").rglob("*"):
    if path.is_file():
        s3.upload_file(str(path), bucket, f"models/tiny-llama/{path.relative_to(assets / 'model')}")
s3.upload_file(str(assets / "train.jsonl"), bucket, "data/train.jsonl")
print(f"uploaded to s3://{bucket}/models/tiny-llama and s3://{bucket}/data/train.jsonl")
EOF

say "operator"
pidfile="$run_dir/demo-operator.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null || true
  sleep 2
fi
oplog="$run_dir/logs/demo-operator.log"
mkdir -p "$(dirname "$oplog")"
KUBETUNE_TRAINER_IMAGE=ghcr.io/kubetune/trainer:dev \
KUBETUNE_DEFAULT_BUCKET_URI="s3://$bucket" \
KUBETUNE_DEFAULT_S3_SECRET=kubetune-s3 \
KUBETUNE_DEFAULT_S3_ENDPOINT="$AWS_ENDPOINT_URL" \
KUBETUNE_DEFAULT_S3_REGION=us-east-1 \
KUBETUNE_METRICS_PORT=18080 \
KUBETUNE_METRICS_SCRAPE_INTERVAL=2 \
  setsid "$py" -m kopf run -m kubetune_operator.handlers --namespace="$ns" --standalone \
    --liveness=http://127.0.0.1:18081/healthz >"$oplog" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 60); do
  curl -sf http://127.0.0.1:18081/healthz >/dev/null 2>&1 && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -30 "$oplog"; echo "operator exited" >&2; exit 1; }
  sleep 0.5
done
echo "operator running (pid $(cat "$pidfile"), log $oplog, metrics http://127.0.0.1:18080/metrics)"

say "kubectl apply -n $ns -f examples/quickstart.yaml"
k -n "$ns" apply -f examples/quickstart.yaml
echo
# awk reads all of it: `head -1` could exit first and fail the pipeline with SIGPIPE (pipefail)
k -n "$ns" get ftj quickstart | awk 'NR == 1'
last=""
deadline=$(( $(date +%s) + 900 ))
phase=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  line=$(k -n "$ns" get ftj quickstart --no-headers 2>/dev/null || true)
  if [ -n "$line" ] && [ "$line" != "$last" ]; then echo "$line"; last=$line; fi
  phase=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in Succeeded|Failed|Serving) break ;; esac
  sleep 1
done

say "result: $phase"
k -n "$ns" get ftj quickstart -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
adapter=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.output.adapterUri}')
report=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.output.reportUri}')
checkpoint=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.checkpoint.uri}')
cat <<EOF

  adapter      $adapter
  report       $report
  checkpoint   $checkpoint
  metrics      $(k -n "$ns" get ftj quickstart -o jsonpath='{.status.metrics}')
  attempts     $(k -n "$ns" get ftj quickstart -o jsonpath='{.status.attempts}')

Inspect it (the cluster and MinIO keep running; \`make cluster-down\` stops them):
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $ns get ftj                     # phase, progress, loss
  kubectl -n $ns describe ftj quickstart     # conditions and phase events
  kubectl -n $ns get ftj quickstart -o yaml  # full status: progress, metrics, checkpoint, output
  kubectl -n $ns get jobs,pods,configmaps -l kubetune.io/job=quickstart
  AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \\
    $py -c "import boto3; [print(o['Key']) for o in boto3.client('s3').list_objects_v2(Bucket='$bucket', Prefix='$ns/quickstart/')['Contents']]"
  curl -s http://127.0.0.1:18080/metrics | grep kubetune_operator_   # operator metrics (operator pid $(cat "$pidfile"))
  trainer log: $run_dir/pods/$ns/<pod>/*/logs/trainer.log

demo wall time: $(( $(date +%s) - start ))s
EOF
[ "$phase" = "Succeeded" ]
