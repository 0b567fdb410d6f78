"""vLLM serving of a finished job: a Deployment (an init container pulls the
artifact from S3 into a shared volume; vLLM serves it with an OpenAI-compatible
API) and a ClusterIP Service in front of it."""

from __future__ import annotations

from ..api.job import FineTuneJob
from ..settings import Settings
from . import locations
from .meta import SERVING_APP, common_labels, object_meta, serving_name
from .pod import container_security_context, pod_security_context, resource_requirements, s3_env, token_env

SERVING_PORT = 8000
MODELS_DIR = "/models"

# Copies every object under an s3:// prefix into a directory. Runs in the
# trainer image (python + boto3), reading credentials from the AWS_* env.
FETCH_SCRIPT = """\
import os, sys, boto3
uri, dest = sys.argv[1], sys.argv[2]
bucket, _, prefix = uri.removeprefix("s3://").partition("/")
prefix = prefix.rstrip("/") + "/" if prefix else ""
s3 = boto3.client("s3")
count = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get("Contents", []):
        rel = item["Key"][len(prefix):]
        if not rel or rel.endswith("/"):
            continue
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, item["Key"], path)
        count += 1
if not count:
    sys.exit(f"nothing found under {uri}")
print(f"fetched {count} files from {uri} to {dest}")
"""


def adapter_uri(job: FineTuneJob, cfg: Settings) -> str:
    out = job.status.output if job.status else None
    return (out.adapter_uri if out and out.adapter_uri else None) or f"{locations.output_uri(job, cfg)}/adapter"


def merged_uri(job: FineTuneJob, cfg: Settings) -> str:
    out = job.status.output if job.status else None
    return (out.merged_uri if out and out.merged_uri else None) or f"{locations.output_uri(job, cfg)}/merged"


def _model_source(uri: str, local: str) -> tuple[str, str | None]:
    """(what vLLM's --model gets, the s3:// URI to fetch first or None)."""
    if uri.startswith("s3://"):
        return local, uri
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://"), None
    if uri.startswith("file://"):
        return uri.removeprefix("file://"), None
    # pvc://claim/path: mounted at /mnt/pvc/claim
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return f"/mnt/pvc/{claim}/{path}".rstrip("/"), None


def _fetch_container(uri: str, dest: str, name: str, env: list[dict], cfg: Settings) -> dict:
    return {
        "name": name,
        "image": cfg.effective_fetch_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-c", FETCH_SCRIPT, uri, dest],
        "env": env,
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": container_security_context(),
    }


def vllm_args(job: FineTuneJob, cfg: Settings) -> tuple[list[str], list[tuple[str, str]]]:
    """(vLLM arguments, [(s3 uri, local dir)] to fetch before it starts)."""
    serving = job.spec.serving
    served_name = job.metadata.name
    fetches: list[tuple[str, str]] = []
    if serving.mode == "merged":
        model, fetch = _model_source(merged_uri(job, cfg), f"{MODELS_DIR}/merged")
        if fetch:
            fetches.append((fetch, model))
        args = ["--model", model, "--served-model-name", served_name]
    else:
        model, fetch = _model_source(job.spec.model.uri, f"{MODELS_DIR}/base")
        if fetch:
            fetches.append((fetch, model))
        adapter, fetch = _model_source(adapter_uri(job, cfg), f"{MODELS_DIR}/adapter")
        if fetch:
            fetches.append((fetch, adapter))
        lora = job.spec.resolved_lora
        args = ["--model", model, "--enable-lora", "--lora-modules", f"{served_name}={adapter}"]
        if lora is not None:
            args += ["--max-lora-rank", str(lora.r)]
    args += ["--host", "0.0.0.0", "--port", str(SERVING_PORT)]
    args += list(serving.extra_args)
    return args, fetches


def build_serving_deployment(job: FineTuneJob, cfg: Settings) -> dict:
    serving = job.spec.serving
    ns = job.metadata.namespace or "default"
    labels = common_labels(job, SERVING_APP, "serving")
    args, fetches = vllm_args(job, cfg)
    env = s3_env(job, cfg) if fetches else []
    init = [_fetch_container(uri, dest, f"fetch-{i}", env, cfg) for i, (uri, dest) in enumerate(fetches)]
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "vllm",
        "image": serving.image or cfg.vllm_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/hf"}] + token_env(job),
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "readinessProbe": dict(probe, failureThreshold=3),
        "livenessProbe": dict(probe, failureThreshold=6),
        # Loading weights can take many minutes; liveness waits for it.
        "startupProbe": dict(probe, failureThreshold=180),
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
    pod_spec: dict = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if init:
        pod_spec["initContainers"] = init
    if job.spec.resources.node_selector and serving.gpus:
        pod_spec["nodeSelector"] = dict(job.spec.resources.node_selector)
    if job.spec.resources.tolerations and serving.gpus:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in job.spec.resources.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(job, ns, serving_name(job.metadata.name), labels),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def build_serving_service(job: FineTuneJob, cfg: Settings) -> dict:
    ns = job.metadata.namespace or "default"
    labels = common_labels(job, SERVING_APP, "serving")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, ns, serving_name(job.metadata.name), labels),
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def serving_endpoint(job: FineTuneJob) -> str:
    """The OpenAI-compatible base URL inside the cluster."""
    ns = job.metadata.namespace or "default"
    return f"http://{serving_name(job.metadata.name)}.{ns}.svc:{SERVING_PORT}/v1"


def build_serving_objects(job: FineTuneJob, cfg: Settings) -> list[dict]:
    return [build_serving_deployment(job, cfg), build_serving_service(job, cfg)]
