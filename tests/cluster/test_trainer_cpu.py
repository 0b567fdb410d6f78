"""The trainer image on the real node reads its container's CPU limit from the
cgroup the kubelet and runc made, and sizes torch's threads to it
(kubetune_trainer.cpu_threads; the cgroup trees themselves: tests/unit/test_cpu_threads.py)."""
from __future__ import annotations

import json

import pytest

from tests.harness.waiting import wait_for

pytestmark = pytest.mark.cluster

SIZE_THREADS = ("import logging, sys, torch; "
                "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s'); "
                "from kubetune_trainer.cpu_threads import size_torch_threads; "
                "size_torch_threads(); print('torch threads', torch.get_num_threads())")


def test_torch_threads_follow_the_containers_cpu_limit(kube, namespace, real_node, trainer_image):
    container = {"name": "trainer", "image": trainer_image, "imagePullPolicy": "Never",
                 "command": ["python", "-c", SIZE_THREADS], "env": [{"name": "HOME", "value": "/tmp"}],
                 "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "500m", "memory": "1Gi"}}}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "threads"},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container]}}
    kube.raw.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)

    def finished():
        p = kube.raw.get(f"/api/v1/namespaces/{namespace}/pods/threads")
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    done = wait_for(finished, 180, what="the trainer image's pod finished",
                    describe=lambda: json.dumps(kube.raw.get(f"/api/v1/namespaces/{namespace}/pods/threads")["status"])[:2000])
    log = kube.kubectl("-n", namespace, "logs", "threads").stdout
    assert done["status"]["phase"] == "Succeeded", (done["status"], log)
    assert done["spec"]["nodeName"] == real_node.name
    # half a CPU of quota on a node with more: one thread, not one per visible CPU
    assert "CPU threads: 1 (the container's CPU limit 0.5;" in log, log
    assert "torch threads 1" in log.splitlines(), log
