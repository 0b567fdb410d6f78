#!/usr/bin/env bash
# `make demo`: the main job end to end on a local control plane, tiny model, CPU.
#
#   control plane + MinIO + pod runner (reused if running) -> CRDs -> operator
#   -> tiny model + dataset in s3://kubetune-demo -> examples/quickstart.yaml
#   -> live status until it ends -> where the adapter, report and metrics are
#   -> the evaluation's verdict and table; the report saved beside the run (file://);
#   with SERVE=1: serving switched on -> vLLM (its CPU build) -> a curl and its answer.
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
if [ "${SERVE:-0}" = "1" ]; then
  KUBETUNE_VLLM_VENV=$(bash hack/vllm-env.sh)  # the pod runner runs vLLM's image from it
  export KUBETUNE_VLLM_VENV
fi
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
k apply --server-side --force-conflicts -f crds/finetunejob.yaml -f crds/finetunesweep.yaml -f charts/kubetune/crds/kopf-peering.yaml >/dev/null
k wait --for=condition=Established crd/finetunejobs.kubetune.io --timeout=60s >/dev/null
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
# The S3 Secret the quickstart job uses by default (operator setting KUBETUNE_DEFAULT_S3_SECRET).
# Labelled usable: the admin policy lets jobs reference only Secrets that carry the label.
k -n "$ns" create secret generic kubetune-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" --dry-run=client -o yaml \
  | k label --local -f - kubetune.io/usable=true -o yaml | k apply -f - >/dev/null

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
KUBETUNE_POLICY="{\"storageRoots\": [\"s3://$bucket/{namespace}/\"], \"readOnlyRoots\": [\"s3://$bucket/models/\", \"s3://$bucket/data/\"], \"allowedS3Endpoints\": [\"$AWS_ENDPOINT_URL\"]}" \
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

EOF

say "evaluation (held-out test rows): base vs tuned"
# The verdict and the table from status.evaluation; the report saved beside the run to open in a browser.
STATUS_JSON=$(k -n "$ns" get ftj quickstart -o json) "$py" - "$run_dir/demo-report" <<'PY'
import json, os, shutil, sys
from pathlib import Path

import boto3
from kubetune_contract.evaluation_metrics import METRICS, format_value, metric

status = json.loads(os.environ["STATUS_JSON"]).get("status") or {}
ev, out = status.get("evaluation") or {}, Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)  # the previous demo's report
fit = next((c for c in status.get("conditions") or [] if c["type"] == "Fit"), {})
print("  " + ev.get("verdict", "no evaluation in status"))
print(f"  Fit={fit.get('status')} ({fit.get('reason')}): {fit.get('message')}\n")
print(f"  {'metric':36} {'base':>9} {'tuned':>9}  better")
for name, row in sorted((ev.get("metrics") or {}).items(), key=lambda item: list(METRICS).index(item[0])):
    mark = {True: "yes", False: "no"}.get(row.get("better"), "")
    print(f"  {metric(name).label:36} {format_value(name, row.get('base')):>9} {format_value(name, row.get('tuned')):>9}  {mark}")
report = (status.get("output") or {}).get("reportUri")
if report:
    bucket, _, key = report.removeprefix("s3://").partition("/")
    prefix = key.rsplit("/", 1)[0] + "/"
    s3 = boto3.client("s3")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        rel = obj["Key"][len(prefix):]
        if rel.startswith("report") or rel in ("metrics.json", "predictions.jsonl"):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(out / rel))
    print(f"\n  report: file://{(out / 'report.html').resolve()}   (also {report})")
PY
[ "$phase" = "Succeeded" ] || { echo "demo wall time: $(( $(date +%s) - start ))s"; exit 1; }

if [ "${SERVE:-0}" = "1" ]; then
  # Serving switched on after training: the operator creates the vLLM Deployment
  # and Service, the pod runner runs vLLM's CPU build as the vllm/vllm-openai image.
  say "serving the adapter with vLLM: kubectl patch ftj quickstart spec.serving.enabled=true"
  k -n "$ns" patch ftj quickstart --type merge \
    -p '{"spec":{"serving":{"enabled":true,"replicas":1,"gpus":0,"extraArgs":["--dtype=float32","--max-model-len=256"]}}}' >/dev/null
  deadline=$(( $(date +%s) + 900 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    phase=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.phase}')
    [ "$phase" = "Serving" ] && break
    sleep 2
  done
  k -n "$ns" get ftj quickstart -o jsonpath='  {range .status.conditions[?(@.type=="Serving")]}{.type}={.status} ({.reason}): {.message}{end}{"\n"}'
  [ "$phase" = "Serving" ] || { echo "not serving after 15 minutes; vLLM's log: $run_dir/pods/$ns/quickstart-serve-*/*/logs/vllm.log" >&2; exit 1; }
  endpoint=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.serving.endpoint}')
  model=$(k -n "$ns" get ftj quickstart -o jsonpath='{.status.serving.modelName}')
  # No kube-proxy here: the Service's ready endpoint is what it would route to.
  address=$(k -n "$ns" get endpointslices -l kubernetes.io/service-name=quickstart-serve \
    -o jsonpath='{.items[0].endpoints[?(@.conditions.ready==true)].addresses[0]}')
  body="{\"model\": \"$model\", \"prompt\": \"Give the code word for rizo.\", \"max_tokens\": 4, \"temperature\": 0}"
  echo
  echo "  endpoint     $endpoint (model $model; in the cluster)"
  echo "  \$ curl -s http://$address:8000/v1/completions -H 'Content-Type: application/json' -d '$body'"
  curl -s "http://$address:8000/v1/completions" -H 'Content-Type: application/json' -d "$body" \
    | "$py" -c 'import json, sys; print("  answer:", repr(json.load(sys.stdin)["choices"][0]["text"]), "(trained: dopa)")'
fi
echo "demo wall time: $(( $(date +%s) - start ))s"
