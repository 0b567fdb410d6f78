"""The harness itself against real components: the Job and garbage-collector
controllers acting on pods the real node runs, the node's health, MinIO
multipart, Prometheus scraping, a component that fails to start, a client
process beside the cluster. The node's own behaviour (containers, exec,
Services, DNS): test_node.py."""
from __future__ import annotations

import hashlib
import json
import os
import textwrap

import pytest

from tests.harness.procs import free_port
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def job(toolbox_image):
    """job(name, script, backoff_limit=0): a batch/v1 Job running ``sh -c script``
    in the node tests' busybox image."""
    def make(name: str, script: str, backoff_limit: int = 0) -> dict:
        return {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": toolbox_image, "imagePullPolicy": "Never",
                                "command": ["sh", "-c", script]}]}}},
        }
    return make


def job_condition(kube, ns: str, name: str, ctype: str):
    status = kube.batch.read_namespaced_job_status(name, ns).status
    return next((c for c in status.conditions or [] if c.type == ctype and c.status == "True"), None)


def pods_of_job(kube, ns: str, name: str) -> list:
    return kube.core.list_namespaced_pod(ns, label_selector=f"job-name={name}").items


def pod_summary(kube, ns: str) -> str:
    return json.dumps([{"name": p.metadata.name, "phase": p.status.phase,
                        "containers": [s.to_dict() for s in p.status.container_statuses or []]}
                       for p in kube.core.list_namespaced_pod(ns).items], default=str)[:3000]


def terminated(pod) -> dict:
    state = pod.status.container_statuses[0].state
    assert state.terminated is not None, state
    return state.terminated


def test_job_completes_through_the_job_controller(kube, namespace, real_node, job):
    kube.batch.create_namespaced_job(namespace, job("hello", 'echo "hello from $HOSTNAME"'))
    wait_for(lambda: job_condition(kube, namespace, "hello", "Complete"), 60,
             what="Job Complete", describe=lambda: pod_summary(kube, namespace))
    (pod,) = pods_of_job(kube, namespace, "hello")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name == real_node.name
    assert terminated(pod).exit_code == 0 and terminated(pod).reason == "Completed"
    assert kube.batch.read_namespaced_job_status("hello", namespace).status.succeeded == 1
    assert real_node.logs(namespace, pod.metadata.name) == f"hello from {pod.metadata.name}\n"
    # The same through the API server (kubectl logs), which asks the kubelet.
    assert kube.core.read_namespaced_pod_log(pod.metadata.name, namespace) == f"hello from {pod.metadata.name}\n"
    assert kube.kubectl("logs", "-n", namespace, "job/hello").stdout == f"hello from {pod.metadata.name}\n"


def test_garbage_collector_removes_children_of_a_deleted_owner(kube, namespace, job):
    # (a shell as PID 1 ignores SIGTERM unless it traps it: the kubelet would wait out the 30 s grace period)
    kube.batch.create_namespaced_job(namespace, job("sleeper", "trap 'exit 0' TERM; sleep 600 & wait"))
    pod = wait_for(lambda: next((p for p in pods_of_job(kube, namespace, "sleeper")
                                 if p.status.phase == "Running"), None), 60, what="running pod")
    owner = kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}]}})

    kube.batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    kube.core.delete_namespaced_config_map("owner", namespace)

    wait_for(lambda: not pods_of_job(kube, namespace, "sleeper"), 60, what="job's pods collected",
             describe=lambda: pod_summary(kube, namespace))
    wait_for(lambda: "child" not in [c.metadata.name for c in kube.core.list_namespaced_config_map(namespace).items],
             60, what="child ConfigMap collected")
    assert pod.metadata.owner_references[0].kind == "Job"


def test_failing_pod_is_retried_by_job_backoff_until_the_limit(kube, namespace, job):
    kube.batch.create_namespaced_job(namespace, job("failing", "echo attempt failed; exit 3", backoff_limit=1))
    failed = wait_for(lambda: job_condition(kube, namespace, "failing", "Failed"), 90,
                      what="Job Failed", describe=lambda: pod_summary(kube, namespace))
    assert failed.reason == "BackoffLimitExceeded"
    pods = pods_of_job(kube, namespace, "failing")
    assert len(pods) == 2, "one retry after the first failure (backoffLimit 1)"
    for pod in pods:
        assert pod.status.phase == "Failed"
        assert terminated(pod).exit_code == 3 and terminated(pod).reason == "Error"
    assert kube.batch.read_namespaced_job_status("failing", namespace).status.failed == 2


def test_minio_multipart_round_trip(s3_bucket):
    from boto3.s3.transfer import TransferConfig
    import io

    payload = os.urandom(12 * 1024 * 1024)
    parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3_bucket.client.upload_fileobj(io.BytesIO(payload), s3_bucket.name, "ckpt/step-1/model.bin", Config=parts)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="ckpt/step-1/model.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3"), "uploaded as 3 parts (5 + 5 + 2 MiB)"
    out = io.BytesIO()
    s3_bucket.client.download_fileobj(s3_bucket.name, "ckpt/step-1/model.bin", out, Config=parts)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(payload).digest()
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="ckpt/step-1/COMMITTED", Body=b"{}")
    assert s3_bucket.keys("ckpt/") == ["ckpt/step-1/COMMITTED", "ckpt/step-1/model.bin"]


def test_prometheus_scrapes_a_prometheus_client_exporter(prometheus):
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauge = Gauge("kubetune_harness_test_loss", "a value to scrape", ["rank"], registry=registry)
    gauge.labels(rank="0").set(1.25)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = prometheus([f"127.0.0.1:{port}"])
        value = prom.wait_for_value('kubetune_harness_test_loss{job="kubetune-test",rank="0"}', timeout=30)
        assert value == 1.25
        gauge.labels(rank="0").set(0.5)
        wait_for(lambda: float(prom.query("kubetune_harness_test_loss")[0]["value"][1]) == 0.5, 15,
                 what="the new value scraped")
    finally:
        server.shutdown()


def test_a_component_that_fails_to_start_is_named_with_its_log_tail():
    from tests.harness import cluster
    from tests.harness.procs import ComponentFailed

    with pytest.raises(ComponentFailed) as failure:
        cluster.start(start_node=False, extra_args={"kube-apiserver": ["--no-such-flag"]})
    message = str(failure.value)
    assert message.startswith("kube-apiserver exited with code")
    assert "unknown flag: --no-such-flag" in message


def test_background_process_talks_to_the_control_plane_and_is_stopped(background_process, namespace):
    import sys

    script = textwrap.dedent(f"""
        import signal, sys, time
        from kubernetes import client, config
        config.load_kube_config()
        print("namespaces:", [n.metadata.name for n in client.CoreV1Api().list_namespace().items], flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (print("stopping", flush=True), sys.exit(0)))
        time.sleep(600)
    """)
    proc = background_process([sys.executable, "-c", script], name="client")
    wait_for(lambda: "namespaces:" in proc.log(), 30, what="client output", describe=proc.log)
    assert namespace in proc.log()
    assert proc.stop() == 0 and "stopping" in proc.log()


def test_the_node_is_ready_untainted_and_its_lease_fresh(kube, real_node):
    from datetime import datetime, timezone

    node = kube.core.read_node(real_node.name)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert not node.spec.taints, "the node lifecycle controller sees a healthy node"
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.allocatable["nvidia.com/gpu"] == "8"
    lease = kube.coordination.read_namespaced_lease(real_node.name, "kube-node-lease")
    age = (datetime.now(timezone.utc) - lease.spec.renew_time).total_seconds()
    assert age < 15, f"lease of {real_node.name} renewed {age:.0f}s ago"
