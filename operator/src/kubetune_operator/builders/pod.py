"""Pieces of pod specs that every kubetune pod shares: the `restricted` Pod
Security Standard, credentials from Secret references, writable scratch space
on a read-only root filesystem."""

from __future__ import annotations

from ..api.job import FineTuneJob
from ..settings import Settings
from . import locations

RUN_AS_USER = 1000

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}

def pod_security_context() -> dict:
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in POD_SECURITY_CONTEXT.items()}


def container_security_context() -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def literal(text: str) -> str:
    """`text` as the kubelet passes it on: it expands `$(NAME)` in commands, args
    and env values with the pod's environment (Secrets included) and turns `$$`
    into `$`. Every string a spec gives that reaches one goes through here (the
    API server already refuses `$(` in them; this holds if a check is missed)."""
    return text.replace("$", "$$")


def secret_env(env_name: str, secret: str, key: str) -> dict:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def s3_secret_name(job: FineTuneJob, cfg: Settings) -> str:
    s3 = job.spec.credentials.s3
    return s3.secret_name if s3 else cfg.default_s3_secret


def s3_env(job: FineTuneJob, cfg: Settings) -> list[dict]:
    """AWS_* variables: keys from the Secret, endpoint and region as plain values."""
    s3 = job.spec.credentials.s3
    id_key = s3.access_key_id_key if s3 else "AWS_ACCESS_KEY_ID"
    secret_key = s3.secret_access_key_key if s3 else "AWS_SECRET_ACCESS_KEY"
    secret = s3_secret_name(job, cfg)
    env = [
        secret_env("AWS_ACCESS_KEY_ID", secret, id_key),
        secret_env("AWS_SECRET_ACCESS_KEY", secret, secret_key),
    ]
    endpoint, region = locations.s3_endpoint(job, cfg), locations.s3_region(job, cfg)
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": literal(endpoint)})
    if region:
        env.append({"name": "AWS_REGION", "value": literal(region)})
    return env


def token_env(job: FineTuneJob) -> list[dict]:
    """HF and experiment-tracker tokens, each only when referenced."""
    creds = job.spec.credentials
    env = []
    if creds.hf_token:
        env.append(secret_env("HF_TOKEN", creds.hf_token.name, creds.hf_token.key))
    if creds.tracking:
        name = "MLFLOW_TRACKING_TOKEN" if job.spec.tracking.backend == "mlflow" else "WANDB_API_KEY"
        env.append(secret_env(name, creds.tracking.name, creds.tracking.key))
    return env


def scratch_volumes(shm: bool) -> tuple[list[dict], list[dict]]:
    """(volumes, mounts): /tmp is the one writable place on a read-only root;
    /dev/shm in memory for multi-process collectives."""
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def resource_requirements(cpu, memory, gpus: int, gpu_resource: str) -> dict:
    """Requests equal limits: training pods get Guaranteed QoS when cpu and memory are set."""
    limits: dict = {}
    if cpu is not None:
        limits["cpu"] = str(cpu)
    if memory is not None:
        limits["memory"] = str(memory)
    if gpus:
        limits[gpu_resource] = str(gpus)
    if not limits:
        return {}
    return {"requests": dict(limits), "limits": dict(limits)}
