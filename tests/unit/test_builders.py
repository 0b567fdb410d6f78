"""Builders: golden dicts for the quickstart Job, and the properties every pod
must have (restricted Pod Security Standard, no API token, no secret values)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from kubetune_operator.admission import disallowed_images
from kubetune_operator.api import load_manifests, parse_job
from kubetune_operator.builders import (
    build_headless_service,
    build_serving_deployment,
    build_serving_service,
    build_training_job,
    serving_endpoint,
)
from kubetune_operator.api.spec import vllm_lora_rank
from kubetune_operator.builders.meta import child_name, training_job_name
from kubetune_operator.api.policy import PolicySpec
from kubetune_operator.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CFG = Settings(
    trainer_image="registry.local/kubetune/trainer:1",
    allowed_image_prefixes=("registry.local/kubetune/",),
    default_bucket_uri="s3://kt-bucket",
    default_s3_secret="kt-s3",
    default_s3_endpoint="http://minio.local:9000",
    vllm_image="registry.local/vllm:1",
    # The examples' own buckets, allowed as an admin would (the default policy's root is kt-bucket/<namespace>/).
    admin_policy=PolicySpec(storage_roots=["s3://kt-bucket/{namespace}/", "s3://acme-ml-checkpoints/", "s3://acme-ml-outputs/"],
                            read_only_roots=["s3://kubetune-demo/", "s3://acme-ml-data/", "s3://acme-ml-models/"],
                            allowed_s3_endpoints=["http://minio.local:9000"]),
)
UID = "0b7c3a6e-1111-2222-3333-444455556666"


def example(name: str, namespace: str = "team", uid: str | None = UID, **spec_overrides):
    parsed = load_manifests(REPO / "examples" / name)[0]
    assert not parsed.problems, parsed.problems
    doc = parsed.job.to_manifest()
    doc["metadata"]["namespace"] = namespace
    if uid:
        doc["metadata"]["uid"] = uid
    doc["spec"].update(spec_overrides)
    result = parse_job(doc)
    assert result.job is not None, result.problems
    return result.job


LABELS = {
    "app.kubernetes.io/name": "kubetune-trainer",
    "app.kubernetes.io/managed-by": "kubetune",
    "app.kubernetes.io/component": "trainer",
    "kubetune.io/job": "quickstart",
}

QUICKSTART_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "quickstart-train",
        "namespace": "team",
        "labels": LABELS,
        "ownerReferences": [
            {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "quickstart", "uid": UID, "controller": True, "blockOwnerDeletion": True}
        ],
    },
    "spec": {
        "completions": 1,
        "parallelism": 1,
        "completionMode": "NonIndexed",
        "backoffLimit": 3,
        "suspend": False,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2, 3]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": LABELS},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationGracePeriodSeconds": 120,
                "containers": [
                    {
                        "name": "trainer",
                        "image": "registry.local/kubetune/trainer:1",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["kubetune-train", "--config", "/etc/kubetune/config.json"],
                        "env": [
                            {"name": "KUBETUNE_NAMESPACE", "value": "team"},
                            {"name": "KUBETUNE_JOB", "value": "quickstart"},
                            {"name": "KUBETUNE_JOB_UID", "value": UID},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "KUBETUNE_WORKDIR", "value": "/tmp/kubetune"},
                            {"name": "HOME", "value": "/tmp"},
                            {"name": "HF_HOME", "value": "/tmp/hf"},
                            {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"},
                            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "kt-s3", "key": "AWS_ACCESS_KEY_ID"}}},
                            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "kt-s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
                            {"name": "AWS_ENDPOINT_URL", "value": "http://minio.local:9000"},
                        ],
                        "ports": [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/kubetune", "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                        },
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": "quickstart-config"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        },
    },
}


def test_quickstart_job_golden():
    assert build_training_job(example("quickstart.yaml"), CFG) == QUICKSTART_JOB


def test_builders_are_deterministic_and_do_not_mutate_the_job():
    job = example("qlora-llama3-8b.yaml")
    before = job.model_dump()
    assert build_training_job(job, CFG) == build_training_job(job, CFG)
    assert job.model_dump() == before


def test_no_owner_reference_without_uid():
    job = build_training_job(example("quickstart.yaml", uid=None), CFG)
    assert "ownerReferences" not in job["metadata"]


def test_job_knobs_from_spec():
    job = example(
        "qlora-llama3-8b.yaml",
        suspend=True, queueName="gpu-queue", ttlSecondsAfterFinished=600,
    )
    built = build_training_job(job, CFG)
    spec, pod = built["spec"], built["spec"]["template"]["spec"]
    assert built["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec["suspend"] is True
    assert spec["backoffLimit"] == 5
    assert spec["activeDeadlineSeconds"] == 86400
    assert spec["ttlSecondsAfterFinished"] == 600
    assert pod["priorityClassName"] == "ml-training"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }
    env = {e["name"]: e for e in container["env"]}
    # Spec's secret and key names, region from the spec, endpoint from operator defaults.
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "acme-s3", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_REGION"]["value"] == "us-east-1"
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    # GPU pods get an in-memory /dev/shm for NCCL.
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]


def _pods(objects):
    for obj in objects:
        if obj["kind"] == "Job":
            yield obj["spec"]["template"]["spec"]
        if obj["kind"] == "Deployment":
            yield obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", ["quickstart.yaml", "qlora-llama3-8b.yaml", "multinode-deepspeed.yaml", "serving.yaml"])
def test_every_pod_meets_the_restricted_pod_security_standard(name):
    job = example(name)
    objects = [build_training_job(job, CFG), build_serving_deployment(job, CFG)]
    for pod in _pods(objects):
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret", "persistentVolumeClaim"}, volume
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["readOnlyRootFilesystem"] is True
            assert "privileged" not in sc
            assert not any(p.get("hostPort") for p in container.get("ports", []))
            # Secrets only by reference, never as literal values.
            for env in container.get("env", []):
                if env["name"] in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "WANDB_API_KEY"):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"]


def test_multinode_is_an_indexed_job_with_rendezvous_service():
    job = example("multinode-deepspeed.yaml")
    built = build_training_job(job, CFG)
    spec, pod = built["spec"], built["spec"]["template"]["spec"]
    assert (spec["completions"], spec["parallelism"], spec["completionMode"]) == (4, 4, "Indexed")
    # No second live pod of an index while its predecessor still terminates.
    assert spec["podReplacementPolicy"] == "Failed"
    assert pod["subdomain"] == "llama3-70b-full-train"
    container = pod["containers"][0]
    assert container["command"] == [
        "torchrun", "--nnodes=4", "--nproc-per-node=8", "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--master-addr=llama3-70b-full-train-0.llama3-70b-full-train", "--master-port=29500",
        "-m", "kubetune_trainer", "--config", "/etc/kubetune/config.json",
    ]
    env = {e["name"]: e for e in container["env"]}
    # The kubelet expands $(JOB_COMPLETION_INDEX) only from variables declared on the container.
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert {"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"} in container["ports"]
    service = build_headless_service(job, CFG)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["selector"] == built["spec"]["template"]["metadata"]["labels"]


def test_a_queued_job_is_created_suspended_for_kueue_to_admit():
    queued = build_training_job(example("quickstart.yaml", queueName="training"), CFG)
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    assert build_training_job(example("quickstart.yaml"), CFG)["spec"]["suspend"] is False
    assert "podReplacementPolicy" not in queued["spec"]  # one node: the Job's default


def test_single_node_has_no_headless_service_and_multi_gpu_uses_torchrun():
    job = example("quickstart.yaml")
    assert build_headless_service(job, CFG) is None
    doc = job.to_manifest()
    doc["spec"]["resources"] = {"gpusPerNode": 4}
    multi = parse_job(doc).job
    command = build_training_job(multi, CFG)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["torchrun", "--standalone", "--nproc-per-node=4"]


def test_serving_adapter_mode():
    job = example("serving.yaml", namespace="ml-team")
    deployment = build_serving_deployment(job, CFG)
    assert deployment["metadata"]["name"] == "sql-assistant-serve"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    assert vllm["image"] == "registry.local/vllm:1"
    assert vllm["args"] == [
        "--model", "Qwen/Qwen2.5-7B-Instruct", "--served-model-name", "sql-assistant-base",
        "--enable-lora", "--max-loras", "1", "--max-lora-rank", "16", "--lora-modules", "sql-assistant=/models/adapters/sql-assistant",
        "--host=$(POD_IP)", "--port", "8000", "--max-model-len=8192",
    ]
    # vLLM binds the pod's own address (the kubelet expands $(POD_IP) from the container's env).
    env = {e["name"]: e for e in vllm["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert vllm["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    # vLLM's last log lines become its termination message: the operator reports a crash's cause from it.
    assert vllm["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # Never fewer ready pods while what is served changes; a terminating pod keeps answering a moment.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert vllm["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert pod["terminationGracePeriodSeconds"] > vllm["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The adapter comes from the job's output prefix (operator bucket by default).
    (fetch,) = pod["initContainers"]
    assert fetch["command"][-2:] == ["s3://kt-bucket/ml-team/sql-assistant/output/adapter", "/models/adapters/sql-assistant"]
    assert {e["name"] for e in fetch["env"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    service = build_serving_service(job, CFG)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert serving_endpoint(job) == "http://sql-assistant-serve.ml-team.svc:8000/v1"


@pytest.mark.parametrize("r,max_lora_rank", [(1, 1), (2, 8), (8, 8), (16, 16), (24, 32), (33, 64), (300, 320), (512, 512)])
def test_max_lora_rank_is_the_smallest_vllm_accepts_that_holds_r(r, max_lora_rank):
    job = example("serving.yaml", lora={"r": r})
    args = build_serving_deployment(job, CFG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == str(max_lora_rank)
    assert vllm_lora_rank(r) == max_lora_rank


def test_serving_merged_mode_uses_status_output_uri():
    doc = example("serving.yaml").to_manifest()
    doc["spec"]["serving"]["mode"] = "merged"
    doc["metadata"]["uid"] = UID
    doc["status"] = {"output": {"mergedUri": "s3://out/merged-here"}}
    job = parse_job(doc).job
    pod = build_serving_deployment(job, CFG)["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:4] == ["--model", "/models/merged", "--served-model-name", "sql-assistant"]
    assert "--enable-lora" not in args and "--lora-modules" not in args
    assert pod["initContainers"][0]["command"][-2:] == ["s3://out/merged-here", "/models/merged"]


def test_full_fine_tuning_serves_its_merged_model_not_an_adapter():
    doc = example("serving.yaml").to_manifest()
    doc["spec"]["method"] = "full"
    doc["spec"]["serving"].pop("mode")
    doc["spec"]["output"] = {}
    job = parse_job(doc).job
    assert job is not None
    args = build_serving_deployment(job, CFG)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--model", "/models/merged", "--served-model-name", "sql-assistant"]
    assert "--enable-lora" not in args


def _member(name: str, created: str, phase: str = "Succeeded", r: int = 8, **serving):
    doc = example("serving.yaml", namespace="team", uid=f"uid-{name}").to_manifest()
    doc["metadata"].update(name=name, creationTimestamp=created)
    doc["spec"]["lora"] = {"r": r}
    doc["spec"]["serving"] = {"enabled": True, "pool": "coding", "replicas": 1, "gpus": 0, **serving}
    doc["status"] = {"phase": phase, "output": {"adapterUri": f"s3://out/{name}/adapter"}}
    return doc


def test_a_pool_serves_every_trained_member_on_one_deployment():
    from kubetune_operator.builders.serving import build_plan_deployment
    from kubetune_operator.builders.serving_plan import pool_plan
    from kubetune_operator.controllers.servingpool.members import assemble, candidates

    bodies = [_member("writing", "2026-01-02T00:00:00Z", r=24), _member("coding", "2026-01-01T00:00:00Z"),
              _member("analysis", "2026-01-03T00:00:00Z", phase="Running")]
    assembly = assemble(candidates(bodies, "coding"))
    assert assembly.first.metadata.name == "coding"
    assert [j.metadata.name for j in assembly.members] == ["coding", "writing"]  # analysis still trains
    deployment = build_plan_deployment(pool_plan("coding", assembly.members, CFG), CFG)
    assert deployment["metadata"]["name"] == "coding-pool"
    assert deployment["metadata"]["labels"]["kubetune.io/pool"] == "coding"
    assert "kubetune.io/job" not in deployment["metadata"]["labels"]
    # One owner reference per member, none the controller: it goes with the last member.
    assert [(o["name"], o["uid"], o["controller"]) for o in deployment["metadata"]["ownerReferences"]] == [
        ("coding", "uid-coding", False), ("writing", "uid-writing", False)]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-loras") + 1] == "2"
    assert args[args.index("--max-lora-rank") + 1] == "32"  # the largest member's r (24) rounded up
    i = args.index("--lora-modules")
    assert args[i + 1:i + 3] == ["coding=/models/adapters/coding", "writing=/models/adapters/writing"]
    fetch = deployment["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert fetch[-4:] == ["s3://out/coding/adapter", "/models/adapters/coding", "s3://out/writing/adapter", "/models/adapters/writing"]


@pytest.mark.parametrize("field,change,named", [
    ("model", {"uri": "hf://other/base"}, "spec.model.uri"),
    ("serving", {"replicas": 2}, "spec.serving.replicas"),
    ("serving", {"extraArgs": ["--max-model-len=4096"]}, "spec.serving.extraArgs"),
    ("serving", {"image": "registry.local/vllm:2"}, "spec.serving.image"),
])
def test_a_pool_member_that_disagrees_is_refused_naming_the_field(field, change, named):
    from kubetune_operator.controllers.servingpool.members import assemble, candidates

    first, late = _member("first", "2026-01-01T00:00:00Z"), _member("late", "2026-01-02T00:00:00Z")
    late["spec"][field] = {**late["spec"].get(field, {}), **change}
    assembly = assemble(candidates([late, first], "coding"))
    assert [j.metadata.name for j in assembly.members] == ["first"]
    assert named in assembly.refused["late"] and "(set by its first member, first)" in assembly.refused["late"]


def test_a_failed_job_sets_no_terms_and_is_not_served():
    from kubetune_operator.controllers.servingpool.members import assemble, candidates

    failed, ok = _member("failed", "2026-01-01T00:00:00Z", phase="Failed"), _member("ok", "2026-01-02T00:00:00Z")
    ok["spec"]["serving"]["replicas"] = 3
    assembly = assemble(candidates([failed, ok], "coding"))
    assert assembly.first.metadata.name == "ok" and [j.metadata.name for j in assembly.members] == ["ok"]
    assert not assembly.refused


def test_names_stay_dns_labels():
    long = "a" * 63
    assert len(training_job_name(long)) <= 58
    assert training_job_name(long) == training_job_name(long)
    assert child_name(long, "serve") != child_name("a" * 62, "serve")
    assert all(len(child_name(long, s)) <= 63 for s in ("config", "serve"))


def test_disallowed_images():
    job = example("quickstart.yaml", image="docker.io/evil/miner:latest")
    (problem,) = disallowed_images(job, CFG)
    assert "spec.image 'docker.io/evil/miner:latest' is not allowed" in problem
    assert "registry.local/kubetune/" in problem
    assert disallowed_images(example("quickstart.yaml", image="registry.local/kubetune/trainer:2"), CFG) == []
    assert disallowed_images(example("quickstart.yaml"), CFG) == []


def test_settings_from_env():
    cfg = load_settings({
        "KUBETUNE_TRAINER_IMAGE": "r/t:1",
        "KUBETUNE_ALLOWED_IMAGE_PREFIXES": "r/, q/ ,",
        "KUBETUNE_DEFAULT_BUCKET_URI": "s3://b/",
        "KUBETUNE_WATCH_NAMESPACES": "a,b",
        "KUBETUNE_CLIENT_QPS": "20",
        "KUBETUNE_METRICS_PORT": "9090",
        "KUBETUNE_EXTRA_TRAINER_ENV": "A=1,B=two",
    })
    assert cfg.trainer_image == "r/t:1"
    assert cfg.allowed_image_prefixes == ("r/", "q/")
    assert cfg.default_bucket_uri == "s3://b"
    assert cfg.watched_namespaces == ("a", "b")
    assert cfg.client_qps == 20.0 and cfg.metrics_port == 9090
    assert cfg.extra_trainer_env == {"A": "1", "B": "two"}
    assert load_settings({}) == Settings()
    with pytest.raises(ValueError, match="KUBETUNE_CLIENT_BURST"):
        load_settings({"KUBETUNE_CLIENT_BURST": "lots"})


def test_operator_command_line():
    from kubetune_operator.main import kopf_argv

    argv = kopf_argv(Settings(), [])
    assert argv[1:] == ["-m", "kopf", "run", "-m", "kubetune_operator.handlers", "--all-namespaces",
                        "--peering=kubetune", "--liveness=http://0.0.0.0:8081/healthz"]
    argv = kopf_argv(Settings(watched_namespaces=("a", "b"), liveness_port=0), ["--standalone", "--verbose"])
    assert argv[6:] == ["--namespace=a", "--namespace=b", "--standalone", "--verbose"]


def test_render_shows_a_pool_member_s_pool_deployment():
    from kubetune_operator.cli.render import render_objects

    job = example("serving.yaml", uid=None, serving={"enabled": True, "pool": "coding", "mode": "adapter"})
    names = [(o["kind"], o["metadata"]["name"]) for o in render_objects(job, CFG)]
    assert ("Deployment", "coding-pool") in names and ("Service", "coding-pool") in names
    assert ("Deployment", "sql-assistant-serve") not in names
