"""vLLM serving: a Deployment (an init container pulls the weights from S3 into a
shared volume; vLLM serves them with an OpenAI-compatible API) and a ClusterIP
Service in front of it, built from a `ServingPlan` (one job, or a pool of jobs
on one base model: `serving_plan`).

What a real cluster needs and the tests rely on:
- vLLM binds the pod's own IP (`--host=$(POD_IP)`, from the downward API);
- a change of what is served (a pool member added or removed) rolls out
  surge-only (`maxUnavailable: 0`): the old pod serves until the new one is
  ready, and a `preStop` pause lets endpoints drop a terminating pod before
  vLLM stops taking requests;
- vLLM's last log lines become its termination message (`FallbackToLogsOnError`),
  so the operator reports why it crashed without reading logs.
"""

from __future__ import annotations

import hashlib
import json

from ..api.job import FineTuneJob
from ..api.spec import vllm_lora_rank
from ..settings import Settings
from .meta import serving_name
from .pod import container_security_context, literal, pod_security_context, resource_requirements, s3_env, token_env
from .locations import PVC_ROOT, pvc_claims
from .serving_plan import ServingPlan, exported_uri, job_plan

__all__ = ["build_serving_deployment", "build_serving_objects", "build_serving_service", "exported_uri",
           "plan_objects", "serving_endpoint", "service_endpoint", "spec_digest", "template_patch", "vllm_args"]

SERVING_PORT = 8000
MODELS_DIR = "/models"
VLLM_CONTAINER = "vllm"
# Pod spec fields the builder sets only for some specs (a fetch for s3://
# sources; placement with GPUs): a template patch removes them when the new
# spec has none.
OPTIONAL_POD_FIELDS = ("initContainers", "nodeSelector", "tolerations")
# Seconds a terminating vLLM pod keeps serving, so that EndpointSlices (and
# kube-proxy, in a real cluster) stop sending it requests before it stops.
PRESTOP_SLEEP_SECONDS = 5

# Copies every object under each s3:// prefix into its directory
# (argv: uri dir [uri dir ...]). Runs in the trainer image (python + boto3),
# reading credentials from the AWS_* env. An object whose name would land
# outside its directory (`..`, absolute) is refused: a bucket may hold what
# someone else wrote.
FETCH_SCRIPT = """\
import os, sys, boto3
s3 = boto3.client("s3")
pairs = sys.argv[1:]
for uri, dest in zip(pairs[::2], pairs[1::2]):
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    count = 0
    root = os.path.realpath(dest)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            rel = item["Key"][len(prefix):]
            if not rel or rel.endswith("/"):
                continue
            path = os.path.join(dest, rel)
            if ".." in rel.split("/") or rel.startswith("/") or not os.path.realpath(path).startswith(root + os.sep):
                sys.exit(f"refusing {item['Key']}: it would land outside {dest}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, item["Key"], path)
            count += 1
    if not count:
        sys.exit(f"nothing found under {uri}")
    print(f"fetched {count} files from {uri} to {dest}")
"""


def _model_source(uri: str, local: str) -> tuple[str, str | None]:
    """(what vLLM gets as a path or model id, the s3:// URI to fetch first or None)."""
    if uri.startswith("s3://"):
        return local, uri
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://"), None
    if uri.startswith("file://"):
        return uri.removeprefix("file://"), None
    # pvc://claim/path: its claim mounted at PVC_ROOT/claim (_pod_spec)
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return f"{PVC_ROOT}/{claim}/{path}".rstrip("/"), None


def vllm_args_of(plan: ServingPlan) -> tuple[list[str], list[tuple[str, str]]]:
    """(vLLM arguments, [(s3 uri, local dir)] to fetch before it starts)."""
    fetches: list[tuple[str, str]] = []

    def source(uri: str, local: str) -> str:
        path, fetch = _model_source(uri, local)
        if fetch:
            fetches.append((fetch, path))
        return path

    args = ["--model", literal(source(plan.model_uri, f"{MODELS_DIR}/{'base' if plan.adapters else 'merged'}")),
            "--served-model-name", literal(plan.model_name)]
    if plan.adapters:
        modules = [literal(f"{a.name}={source(a.uri, f'{MODELS_DIR}/adapters/{a.name}')}") for a in plan.adapters]
        args += ["--enable-lora", "--max-loras", str(len(plan.adapters)),
                 "--max-lora-rank", str(vllm_lora_rank(max(a.rank for a in plan.adapters))), "--lora-modules", *modules]
    # $(POD_IP) is ours: the one expansion the kubelet is meant to make here.
    args += ["--host=$(POD_IP)", "--port", str(SERVING_PORT), *map(literal, plan.source.spec.serving.extra_args)]
    return args, fetches


def vllm_args(job: FineTuneJob, cfg: Settings) -> tuple[list[str], list[tuple[str, str]]]:
    return vllm_args_of(job_plan(job, cfg))


def _fetch_container(fetches: list[tuple[str, str]], env: list[dict], cfg: Settings) -> dict:
    return {
        "name": "fetch",
        "image": cfg.effective_fetch_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-c", literal(FETCH_SCRIPT), *(literal(part) for pair in fetches for part in pair)],
        "env": env,
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security_context(),
    }


def _vllm_container(plan: ServingPlan, args: list[str], cfg: Settings) -> dict:
    job = plan.source
    serving = job.spec.serving
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": VLLM_CONTAINER,
        "image": serving.image or cfg.vllm_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/hf"}] + token_env(job),
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "readinessProbe": dict(probe, periodSeconds=2, failureThreshold=3),
        "livenessProbe": dict(probe, failureThreshold=6),
        # Loading weights can take many minutes; liveness waits for it.
        "startupProbe": dict(probe, failureThreshold=180),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": container_security_context(),
    }
    resources = resource_requirements(None, None, serving.gpus, job.spec.resources.gpu_resource_name)
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(plan: ServingPlan, cfg: Settings) -> dict:
    job = plan.source
    args, fetches = vllm_args_of(plan)
    container = _vllm_container(plan, args, cfg)
    volumes = [
        {"name": "models", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    # A pvc:// model or adapter is read where the trainer wrote it: its claim, mounted read-only.
    for claim in pvc_claims([plan.model_uri, *(a.uri for a in plan.adapters)]):
        volumes.append({"name": f"pvc-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        container["volumeMounts"].append({"name": f"pvc-{claim}"[:63], "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    pod_spec: dict = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 30 + PRESTOP_SLEEP_SECONDS,
        "containers": [container],
        "volumes": volumes,
    }
    if fetches:
        pod_spec["initContainers"] = [_fetch_container(fetches, s3_env(job, cfg), cfg)]
    if job.spec.resources.node_selector and job.spec.serving.gpus:
        pod_spec["nodeSelector"] = dict(job.spec.resources.node_selector)
    if job.spec.resources.tolerations and job.spec.serving.gpus:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in job.spec.resources.tolerations]
    return pod_spec


def _meta(plan: ServingPlan, annotations: bool) -> dict:
    meta: dict = {"name": plan.name, "namespace": plan.namespace, "labels": dict(plan.labels)}
    if annotations and plan.annotations:
        meta["annotations"] = dict(plan.annotations)
    if plan.owners:
        meta["ownerReferences"] = [dict(owner) for owner in plan.owners]
    return meta


def build_plan_deployment(plan: ServingPlan, cfg: Settings) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, annotations=True),
        "spec": {
            "replicas": plan.source.spec.serving.replicas,
            "selector": {"matchLabels": dict(plan.labels)},
            # What is served changes (pool members come and go): never fewer ready
            # pods, except while none is ready yet (then the new template replaces
            # the starting pods rather than starting beside them).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "100%" if plan.starting else 0}},
            "template": {"metadata": {"labels": dict(plan.labels)}, "spec": _pod_spec(plan, cfg)},
        },
    }


def build_plan_service(plan: ServingPlan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, annotations=False),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(plan.labels),
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def plan_objects(plan: ServingPlan, cfg: Settings) -> list[dict]:
    """The Service, then the Deployment: in the order they are to be created or
    applied. A later pass looks only at the Deployment (a job's own serving) or
    at the digest the Deployment carries (a pool), so an operator killed between
    the two must not leave the Deployment without its Service."""
    return [build_plan_service(plan), build_plan_deployment(plan, cfg)]


def spec_digest(objects: list[dict]) -> str:
    """What serving objects should be, in 16 hex digits: kept on the Deployment
    (an annotation), so a pass compares it instead of the objects."""
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()[:16]


def template_patch(deployment: dict) -> dict:
    """A JSON merge patch that makes a stored Deployment the built one: its
    replicas and pod template (lists replace theirs whole; a pod spec field the
    new spec leaves out is removed) and its annotations (the digest)."""
    spec = deployment["spec"]
    pod = {**{field: None for field in OPTIONAL_POD_FIELDS}, **spec["template"]["spec"]}
    return {"metadata": {"annotations": dict(deployment["metadata"].get("annotations") or {})},
            "spec": {"replicas": spec["replicas"], "strategy": spec["strategy"],
                     "template": {"metadata": spec["template"]["metadata"], "spec": pod}}}


def build_serving_deployment(job: FineTuneJob, cfg: Settings) -> dict:
    return build_plan_deployment(job_plan(job, cfg), cfg)


def build_serving_service(job: FineTuneJob, cfg: Settings) -> dict:
    return build_plan_service(job_plan(job, cfg))


def service_endpoint(name: str, namespace: str) -> str:
    """The OpenAI-compatible base URL of a serving Service inside the cluster."""
    return f"http://{name}.{namespace}.svc:{SERVING_PORT}/v1"


def serving_endpoint(job: FineTuneJob) -> str:
    return service_endpoint(serving_name(job.metadata.name), job.metadata.namespace or "default")


def build_serving_objects(job: FineTuneJob, cfg: Settings) -> list[dict]:
    return plan_objects(job_plan(job, cfg), cfg)
