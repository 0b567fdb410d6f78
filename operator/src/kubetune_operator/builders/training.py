"""The training children of a FineTuneJob: the trainer-config ConfigMap, the
`batch/v1` Job, and (multi-node) the headless Service pods rendezvous through.

Pure functions of (job, settings): golden-dict tested, printed by `kubetune render`.
"""

from __future__ import annotations

import json

from ..api.job import FineTuneJob
from ..render.trainer_config import Placement, render_trainer_config
from ..settings import Settings
from . import locations
from .meta import (
    LABEL_QUEUE,
    TRAINER_APP,
    common_labels,
    config_map_name,
    headless_service_name,
    object_meta,
    training_job_name,
)
from .pod import (
    container_security_context,
    pod_security_context,
    resource_requirements,
    s3_env,
    scratch_volumes,
    token_env,
)

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
WORKDIR = "/tmp/kubetune"
METRICS_PORT = 9400
RENDEZVOUS_PORT = 29500
TRAINER_CONTAINER = "trainer"
# Trainer exit codes that mean "retrying cannot help" (bad input, diverged
# loss): fail the Job at once instead of burning the backoff budget.
PERMANENT_EXIT_CODES = [2, 3]
SPEC_GENERATION_ANNOTATION = "kubetune.io/spec-generation"


def trainer_image(job: FineTuneJob, cfg: Settings) -> str:
    return job.spec.image or cfg.trainer_image


def trainer_config(job: FineTuneJob, cfg: Settings) -> dict:
    """The JSON the trainer reads (no secrets: those arrive as env from Secrets)."""
    placement = Placement(
        # status.checkpoint and serving read these very locations.
        checkpoint_uri=locations.checkpoint_uri(job, cfg), output_uri=locations.output_uri(job, cfg),
        s3_endpoint=locations.s3_endpoint(job, cfg), s3_region=locations.s3_region(job, cfg), metrics_port=METRICS_PORT,
        shared_uri=locations.shared_uri(job, cfg), uid=getattr(job.metadata, "uid", None),
    )
    return render_trainer_config(job.spec, namespace=job.metadata.namespace or "default", name=job.metadata.name, placement=placement)


def build_configmap(job: FineTuneJob, cfg: Settings) -> dict:
    ns = job.metadata.namespace or "default"
    text = json.dumps(trainer_config(job, cfg), indent=2, sort_keys=True)
    meta = object_meta(job, ns, config_map_name(job.metadata.name), common_labels(job, TRAINER_APP, "config"))
    generation = (job.metadata.model_extra or {}).get("generation")
    if generation is not None:  # which spec it was rendered from: a later one renders it again (api.spec_changes)
        meta["annotations"] = {SPEC_GENERATION_ANNOTATION: str(generation)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"config.json": text + "\n"},
    }


def _command(job: FineTuneJob, cfg: Settings) -> list[str]:
    """kubetune-train for one process; torchrun when there are several."""
    nodes = job.spec.distributed.nodes
    procs = max(job.spec.resources.gpus_per_node, 1)
    if nodes == 1 and procs == 1:
        return list(cfg.trainer_command) if cfg.trainer_command else ["kubetune-train", "--config", CONFIG_FILE]
    if nodes == 1:
        return ["torchrun", "--standalone", f"--nproc-per-node={procs}", "-m", "kubetune_trainer", "--config", CONFIG_FILE]
    name = job.metadata.name
    master = f"{training_job_name(name)}-0.{headless_service_name(name)}"
    return [
        "torchrun",
        f"--nnodes={nodes}",
        f"--nproc-per-node={procs}",
        # Expanded by the kubelet from the env var below: the pod's completion index.
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={master}",
        f"--master-port={RENDEZVOUS_PORT}",
        "-m",
        "kubetune_trainer",
        "--config",
        CONFIG_FILE,
    ]


def _pvc_claims(job: FineTuneJob, cfg: Settings) -> list[str]:
    return locations.pvc_claims(locations.trainer_uris(job, cfg))


def _env(job: FineTuneJob, cfg: Settings) -> list[dict]:
    env = [
        {"name": "KUBETUNE_NAMESPACE", "value": job.metadata.namespace or "default"},
        {"name": "KUBETUNE_JOB", "value": job.metadata.name},
        # The trainer runs only a config rendered for this very FineTuneJob (its job.uid).
        *([{"name": "KUBETUNE_JOB_UID", "value": uid}] if (uid := getattr(job.metadata, "uid", None)) else []),
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KUBETUNE_WORKDIR", "value": WORKDIR},
        # Read-only root: caches must go to the writable /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
    ]
    if job.spec.distributed.nodes > 1:
        env += [
            {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "NNODES", "value": str(job.spec.distributed.nodes)},
            {"name": "MASTER_ADDR", "value": f"{training_job_name(job.metadata.name)}-0.{headless_service_name(job.metadata.name)}"},
            {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        ]
    if locations.uses_s3(job, cfg):
        env += s3_env(job, cfg)
    env += token_env(job)
    env += [{"name": key, "value": value} for key, value in sorted(cfg.extra_trainer_env.items())]
    return env


def build_pod_template(job: FineTuneJob, cfg: Settings) -> dict:
    spec = job.spec
    name = job.metadata.name
    multinode = spec.distributed.nodes > 1
    volumes, mounts = scratch_volumes(shm=spec.resources.gpus_per_node > 0 or multinode)
    volumes.insert(0, {"name": "config", "configMap": {"name": config_map_name(name)}})
    mounts.insert(0, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    for claim in _pvc_claims(job, cfg):
        volumes.append({"name": f"pvc-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{claim}"[:63], "mountPath": f"{locations.PVC_ROOT}/{claim}"})
    ports = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    if multinode:
        ports.append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
    container = {
        "name": TRAINER_CONTAINER,
        "image": trainer_image(job, cfg),
        "imagePullPolicy": cfg.image_pull_policy,
        "command": _command(job, cfg),
        "env": _env(job, cfg),
        "ports": ports,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        # The trainer's final JSON (metrics, output URIs) is read from here.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    resources = resource_requirements(spec.resources.cpu, spec.resources.memory, spec.resources.gpus_per_node, spec.resources.gpu_resource_name)
    if resources:
        container["resources"] = resources
    pod_spec: dict = {
        "restartPolicy": "Never",  # the Job retries (podFailurePolicy needs Never)
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        # Time for the trainer's SIGTERM checkpoint upload before SIGKILL.
        "terminationGracePeriodSeconds": 120,
        "containers": [container],
        "volumes": volumes,
    }
    if multinode:
        pod_spec["subdomain"] = headless_service_name(name)
    if spec.resources.node_selector:
        pod_spec["nodeSelector"] = dict(spec.resources.node_selector)
    if spec.resources.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.resources.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    labels = common_labels(job, TRAINER_APP, "trainer")
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def build_training_job(job: FineTuneJob, cfg: Settings) -> dict:
    spec = job.spec
    ns = job.metadata.namespace or "default"
    nodes = spec.distributed.nodes
    labels = common_labels(job, TRAINER_APP, "trainer")
    if spec.queue_name:
        labels[LABEL_QUEUE] = spec.queue_name
    job_spec: dict = {
        "completions": nodes,
        "parallelism": nodes,
        "completionMode": "Indexed" if nodes > 1 else "NonIndexed",
        "backoffLimit": spec.backoff_limit,
        # A queued Job starts suspended and Kueue un-suspends it on admission:
        # created running, it would start before Kueue's webhook (or without
        # Kueue at all) had a say.
        "suspend": spec.suspend or spec.queue_name is not None,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In", "values": PERMANENT_EXIT_CODES}},
                # Evictions and preemptions are not the trainer's fault: retry without counting.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": build_pod_template(job, cfg),
    }
    if nodes > 1:
        # A replacement starts once the pod it replaces has stopped: two live pods
        # of one index would both answer to its rendezvous name.
        job_spec["podReplacementPolicy"] = "Failed"
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(job, ns, training_job_name(job.metadata.name), labels),
        "spec": job_spec,
    }


def build_headless_service(job: FineTuneJob, cfg: Settings) -> dict | None:
    """Stable DNS names `<job>-<index>.<service>` for rendezvous; None for one node."""
    if job.spec.distributed.nodes <= 1:
        return None
    ns = job.metadata.namespace or "default"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(job, ns, headless_service_name(job.metadata.name), common_labels(job, TRAINER_APP, "rendezvous")),
        "spec": {
            "clusterIP": "None",
            # Workers must resolve the master before it is Ready.
            "publishNotReadyAddresses": True,
            "selector": common_labels(job, TRAINER_APP, "trainer"),
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def build_training_objects(job: FineTuneJob, cfg: Settings) -> list[dict]:
    """Everything training needs: the ConfigMap, the headless Service of a multi-node
    job, and the Job (which may be created first: its pods wait for the ConfigMap)."""
    objects = [build_configmap(job, cfg)]
    service = build_headless_service(job, cfg)
    if service:
        objects.append(service)
    objects.append(build_training_job(job, cfg))
    return objects
