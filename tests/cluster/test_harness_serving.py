"""What serving needs of the harness: the pod runner as a container runtime for
the images it knows (the vLLM image's ENTRYPOINT and ENV, declared in
tests/harness/images.py), the preStop `sleep` hook, and pod addresses the real
EndpointSlice controller publishes for a Service."""
from __future__ import annotations

import textwrap
import time

import pytest

from tests.harness import images
from tests.harness.waiting import wait_for


def test_an_image_s_entrypoint_runs_with_the_container_s_args_and_a_command_replaces_it():
    vllm = images.LocalImage(entrypoint=("/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"),
                             env={"VLLM_CPU_KVCACHE_SPACE": "1"}, bin_dir="/venv/bin")
    assert images.container_argv({"args": ["--model", "/m"]}, vllm) == (
        ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"], ["--model", "/m"])
    assert images.container_argv({"command": ["sh", "-c", "true"], "args": ["x"]}, vllm) == (["sh", "-c", "true"], ["x"])
    assert images.container_argv({"args": ["x"]}, None) == ([], ["x"])  # unknown image: nothing to run
    env = images.image_env({"PATH": "/usr/bin", "HOME": "/tmp"}, vllm, declared={"HOME"})
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "1", "PATH": "/venv/bin:/usr/bin", "HOME": "/tmp"}
    # What the pod declares wins over the image's ENV.
    assert images.image_env({"VLLM_CPU_KVCACHE_SPACE": "4", "PATH": ""}, vllm, {"VLLM_CPU_KVCACHE_SPACE"})["VLLM_CPU_KVCACHE_SPACE"] == "4"


def test_only_the_declared_repositories_are_known():
    assert images.is_known("vllm/vllm-openai:v0.32.0") and images.is_known("vllm/vllm-openai@sha256:ab")
    assert not images.is_known("vllm/vllm-openai-rocm:v1") and not images.is_known("ghcr.io/other/vllm-openai:1")


@pytest.mark.cluster
def test_pre_stop_sleep_runs_before_sigterm(kube, namespace, pod_runner):
    script = """
        import signal, sys, time
        print("started", time.time(), flush=True)
        def on_term(*_):
            print("SIGTERM at", time.time(), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        time.sleep(600)
    """
    kube.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "paused"},
        "spec": {"terminationGracePeriodSeconds": 10, "restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", textwrap.dedent(script)],
                                 "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}}]}})
    wait_for(lambda: "started" in pod_runner.logs(namespace, "paused"), 60, what="pod running")
    deleted_at = time.time()
    kube.core.delete_namespaced_pod("paused", namespace)
    wait_for(lambda: "SIGTERM at" in pod_runner.logs(namespace, "paused"), 30, what="SIGTERM")
    sigterm_at = float(pod_runner.logs(namespace, "paused").split("SIGTERM at")[1].split()[0])
    # A lower bound only: the 2 s hook ran first, however late SIGTERM came after it on a busy machine.
    assert sigterm_at - deleted_at >= 2.0, sigterm_at - deleted_at


@pytest.mark.cluster
def test_a_service_gets_real_endpointslices_with_the_pod_s_own_address(kube, namespace, pod_runner):
    from tests.cluster.serving_helpers import ready_addresses

    kube.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "python:3.11",
                                 "command": ["sh", "-c", "exec python -m http.server 8000 --bind $(POD_IP)"],
                                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                                 "ports": [{"name": "http", "containerPort": 8000}],
                                 "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}]}})
    kube.core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    (address,) = wait_for(lambda: ready_addresses(kube, namespace, "web"), 60, what="a ready endpoint")
    pod_ip = kube.core.read_namespaced_pod("web", namespace).status.pod_ip
    assert address == f"{pod_ip}:8000" and not pod_ip.startswith("127."), address
    import urllib.request
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
        assert response.status == 200
