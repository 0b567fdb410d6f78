"""The harness itself against real components: the Job and garbage-collector
controllers acting on pods the pod runner executes, volumes/env/termination
messages, isolation of concurrent pods, graceful deletion, the image policy,
MinIO multipart and Prometheus scraping."""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import textwrap
import time

import pytest

from tests.harness.podrunner import runtime_paths
from tests.harness.procs import free_port, pid_alive
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.cluster


def job(name: str, script: str, backoff_limit: int = 0, **pod_spec) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "python:3.11-slim",
                            "command": ["python", "-c", textwrap.dedent(script)]}],
            **pod_spec}}},
    }


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


def test_job_completes_through_the_job_controller(kube, namespace, pod_runner):
    kube.batch.create_namespaced_job(namespace, job("hello", """
        import os
        print("hello from", os.environ["HOSTNAME"])
    """))
    wait_for(lambda: job_condition(kube, namespace, "hello", "Complete"), 60,
             what="Job Complete", describe=lambda: pod_summary(kube, namespace))
    (pod,) = pods_of_job(kube, namespace, "hello")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name in pod_runner.nodes
    # Its own address: of 198.18.0.0/15 on lo (EndpointSlices accept it), or 127.x where addresses cannot be added.
    address = ipaddress.ip_address(pod.status.pod_ip)
    assert address in ipaddress.ip_network("198.18.0.0/15") or (address.is_loopback and str(address) != "127.0.0.1"), address
    assert terminated(pod).exit_code == 0 and terminated(pod).reason == "Completed"
    assert kube.batch.read_namespaced_job_status("hello", namespace).status.succeeded == 1
    assert pod_runner.logs(namespace, pod.metadata.name) == f"hello from {pod.metadata.name}\n"
    # The same through the API server (kubectl logs), which asks the runner's kubelet endpoint.
    assert kube.core.read_namespaced_pod_log(pod.metadata.name, namespace) == f"hello from {pod.metadata.name}\n"
    assert kube.kubectl("logs", "-n", namespace, "job/hello").stdout == f"hello from {pod.metadata.name}\n"


def test_garbage_collector_removes_children_of_a_deleted_owner(kube, namespace):
    kube.batch.create_namespaced_job(namespace, job("sleeper", "import time; time.sleep(600)"))
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


def test_failing_pod_is_retried_by_job_backoff_until_the_limit(kube, namespace):
    kube.batch.create_namespaced_job(namespace, job("failing", """
        import sys
        print("attempt failed", flush=True)
        sys.exit(3)
    """, backoff_limit=1))
    failed = wait_for(lambda: job_condition(kube, namespace, "failing", "Failed"), 90,
                      what="Job Failed", describe=lambda: pod_summary(kube, namespace))
    assert failed.reason == "BackoffLimitExceeded"
    pods = pods_of_job(kube, namespace, "failing")
    assert len(pods) == 2, "one retry after the first failure (backoffLimit 1)"
    for pod in pods:
        assert pod.status.phase == "Failed"
        assert terminated(pod).exit_code == 3 and terminated(pod).reason == "Error"
    assert kube.batch.read_namespaced_job_status("failing", namespace).status.failed == 2


def test_volumes_env_and_termination_message(kube, namespace, pod_runner):
    kube.core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "settings"}, "data": {"config.json": '{"lr": 0.001}', "mode": "fast"}})
    kube.core.create_namespaced_secret(namespace, {
        "metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t", "user": "alice"}})
    script = """
        import json, os, stat
        cfg = "/etc/kubetune/settings.json"
        out = {
            "config": open(cfg).read(),
            "config_mode": oct(stat.S_IMODE(os.stat(cfg).st_mode)),
            "secret_files": sorted(os.listdir("/var/run/creds")),
            "token_file": open("/var/run/creds/token").read(),
            "env": {k: os.environ[k] for k in ("TOKEN", "MODE", "POD_NAME", "POD_NS", "TEAM", "USER_FROM", "GREETING", "POD_IP")},
            "scratch_writable": os.access("/scratch", os.W_OK),
            "tmp_entries": os.listdir("/tmp"),
            "cwd_writable": os.access(os.getcwd(), os.W_OK),
        }
        open("/dev/termination-log", "w").write(json.dumps(out))
    """
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "reader", "labels": {"team": "ml"}},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "volumes": [
                        {"name": "settings", "configMap": {"name": "settings", "defaultMode": 0o440,
                                                           "items": [{"key": "config.json", "path": "settings.json"}]}},
                        {"name": "creds", "secret": {"secretName": "creds"}},
                        {"name": "scratch", "emptyDir": {}},
                        # Over /tmp, where the harness's own run dir usually is.
                        {"name": "tmp", "emptyDir": {}}],
                    "containers": [
                        {"name": "main", "image": "kubetune/trainer:dev",
                         "command": ["python", "-c", textwrap.dedent(script)],
                         "volumeMounts": [{"name": "settings", "mountPath": "/etc/kubetune", "readOnly": True},
                                          {"name": "creds", "mountPath": "/var/run/creds", "readOnly": True},
                                          {"name": "scratch", "mountPath": "/scratch"},
                                          {"name": "tmp", "mountPath": "/tmp"}],
                         "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "USER_"}],
                         "env": [
                             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                             {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                             {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                             {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                             {"name": "USER_FROM", "value": "$(USER_user)"},
                             {"name": "GREETING", "value": "hi $(POD_NAME) $$(POD_NAME)"}]},
                        {"name": "crasher", "image": "python:3.11",
                         "terminationMessagePolicy": "FallbackToLogsOnError",
                         "command": ["python", "-c", "import sys; print('fatal: no GPU'); sys.exit(2)"]}]}}
    kube.core.create_namespaced_pod(namespace, pod)
    done = wait_for(lambda: (p := kube.core.read_namespaced_pod_status("reader", namespace)).status.phase
                    in ("Succeeded", "Failed") and p, 60, what="pod finished",
                    describe=lambda: pod_summary(kube, namespace))
    assert done.status.phase == "Failed", "one container exited 2"
    states = {s.name: s.state.terminated for s in done.status.container_statuses}
    out = json.loads(states["main"].message)
    assert out["config"] == '{"lr": 0.001}'
    assert out["config_mode"] == "0o440"
    assert out["secret_files"] == ["token", "user"]
    assert out["token_file"] == "s3cr3t"
    assert out["env"] == {"TOKEN": "s3cr3t", "MODE": "fast", "POD_NAME": "reader", "POD_NS": namespace,
                          "TEAM": "ml", "USER_FROM": "alice", "GREETING": "hi reader $(POD_NAME)",
                          "POD_IP": done.status.pod_ip}
    assert out["scratch_writable"] is True
    # Only the runtime (venv, checkout) stays visible, as an image's files would.
    runtime_tops = {p.relative_to("/tmp").parts[0] for p in runtime_paths() if p.is_relative_to("/tmp")}
    assert set(out["tmp_entries"]) == runtime_tops, "an emptyDir over /tmp hides the host's /tmp"
    assert out["cwd_writable"] is True
    assert states["crasher"].exit_code == 2 and states["crasher"].reason == "Error"
    assert states["crasher"].message.strip() == "fatal: no GPU"
    # The volumes exist only inside the pod's mount namespace.
    assert not os.path.exists("/etc/kubetune/settings.json")


def test_concurrent_indexed_pods_are_isolated_and_find_each_other(kube, namespace):
    """Two pods of an Indexed Job write the same absolute path at the same
    time, and resolve each other by hostname.subdomain (headless Service)."""
    kube.core.create_namespaced_service(namespace, {
        "metadata": {"name": "workers"},
        "spec": {"clusterIP": "None", "selector": {"job-name": "pair"}, "ports": [{"port": 29500}]}})
    script = """
        import json, os, socket, time
        index = os.environ["JOB_COMPLETION_INDEX"]
        os.makedirs("/data/out", exist_ok=True)
        open("/data/out/who", "w").write(index)
        peer = "pair-%d.workers" % (1 - int(index))
        deadline = time.time() + 30
        while True:
            try:
                peer_ip = socket.gethostbyname(peer)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(1.5)  # both pods have written by now
        open("/dev/termination-log", "w").write(json.dumps({
            "index": index, "who": open("/data/out/who").read(), "peer_ip": peer_ip,
            "hostname": socket.gethostname(), "ann": os.environ["ANN_INDEX"]}))
    """
    manifest = job("pair", script, subdomain="workers", volumes=[{"name": "out", "emptyDir": {}}])
    manifest["spec"].update(completionMode="Indexed", completions=2, parallelism=2)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "out", "mountPath": "/data/out"}]
    container["env"] = [{"name": "ANN_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    kube.batch.create_namespaced_job(namespace, manifest)
    wait_for(lambda: job_condition(kube, namespace, "pair", "Complete"), 90, what="Job Complete",
             describe=lambda: pod_summary(kube, namespace))
    pods = {p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p
            for p in pods_of_job(kube, namespace, "pair")}
    assert sorted(pods) == ["0", "1"]
    for index, pod in pods.items():
        out = json.loads(terminated(pod).message)
        assert out["who"] == index == out["ann"] == out["index"], "each pod sees only its own /data/out"
        assert out["hostname"] == f"pair-{index}"
        assert out["peer_ip"] == pods[str(1 - int(index))].status.pod_ip
    assert pods["0"].status.pod_ip != pods["1"].status.pod_ip
    assert not os.path.exists("/data/out/who")


def test_graceful_deletion_sigterm_then_sigkill_after_grace(kube, namespace, pod_runner):
    polite = """
        import os, signal, sys, time
        print("pid", os.getpid(), flush=True)
        def on_term(*_):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        time.sleep(600)
    """
    stubborn = """
        import os, signal, time
        print("pid", os.getpid(), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
        while True:
            time.sleep(0.1)
    """
    for name, script in (("polite", polite), ("stubborn", stubborn)):
        kube.core.create_namespaced_pod(namespace, {
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 3, "restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "python:3.11",
                                     "command": ["python", "-c", textwrap.dedent(script)]}]}})
    for name in ("polite", "stubborn"):
        wait_for(lambda: "pid" in pod_runner.logs(namespace, name), 60, what=f"{name} running",
                 describe=lambda: pod_summary(kube, namespace))
    pids = {name: int(pod_runner.logs(namespace, name).split()[1]) for name in ("polite", "stubborn")}

    elapsed, last = {}, {}
    for name in ("polite", "stubborn"):
        since = kube.core.read_namespaced_pod(name, namespace).metadata.resource_version
        t0 = time.monotonic()
        kube.core.delete_namespaced_pod(name, namespace)
        last[name] = deleted_pod(kube, namespace, name, since, timeout=30)
        elapsed[name] = time.monotonic() - t0
        assert not pid_alive(pids[name])
    # The container statuses the node reported last, before the pod object went.
    polite, stubborn = terminated(last["polite"]), terminated(last["stubborn"])
    assert "got SIGTERM" in pod_runner.logs(namespace, "polite")
    assert polite.exit_code == 0, "it exited on SIGTERM by itself, not killed when the grace period ran out"
    assert "ignoring SIGTERM" in pod_runner.logs(namespace, "stubborn")
    assert stubborn.exit_code == 128 + 9, "SIGKILL ended it"
    assert elapsed["stubborn"] >= 3, "no SIGKILL before the 3 s grace period is over"


def deleted_pod(kube, namespace: str, name: str, since: str, timeout: float):
    """The pod as its DELETED watch event carries it: its last state."""
    from kubernetes import watch

    for event in watch.Watch().stream(kube.core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                                      resource_version=since, timeout_seconds=int(timeout)):
        if event["type"] == "DELETED":
            return event["object"]
    raise AssertionError(f"pod {name} not deleted within {timeout}s")


def test_unrunnable_image_is_reported_and_simulated_ready_image_becomes_ready(kube, namespace, pod_runner):
    image = "nvcr.io/nvidia/tritonserver:24.08-py3"
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serve"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "serve"}},
                 "template": {"metadata": {"labels": {"app": "serve"}}, "spec": {
                     "containers": [{"name": "triton", "image": image, "args": ["--model-repository", "/models"],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}
    kube.apps.create_namespaced_deployment(namespace, deployment)

    def waiting():
        for pod in kube.core.list_namespaced_pod(namespace, label_selector="app=serve").items:
            for s in pod.status.container_statuses or []:
                if s.state.waiting and s.state.waiting.reason == "ErrImagePull":
                    return pod, s.state.waiting
    pod, state = wait_for(waiting, 60, what="ErrImagePull", describe=lambda: pod_summary(kube, namespace))
    assert "cannot run on this machine" in state.message and image in state.message
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name in pod_runner.nodes, "GPU pods schedule on the runner's nodes"
    waiting_uid = pod.metadata.uid

    # Declared afterwards, it is picked up like an image pull that succeeds on retry.
    pod_runner.simulate_ready("nvcr.io/nvidia/tritonserver")
    wait_for(lambda: kube.apps.read_namespaced_deployment_status("serve", namespace).status.available_replicas == 1,
             60, what="simulated-ready Deployment available", describe=lambda: pod_summary(kube, namespace))
    (pod,) = kube.core.list_namespaced_pod(namespace, label_selector="app=serve").items
    ready = {c.type: c.status for c in pod.status.conditions}
    assert pod.status.phase == "Running" and ready["Ready"] == "True"
    assert pod.metadata.uid == waiting_uid, "the same pod, not a replacement"
    assert pod_runner.logs(namespace, pod.metadata.name) == "", "nothing ran"


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


def test_restart_policy_on_failure_counts_restarts(kube, namespace):
    # The emptyDir outlives container restarts within the pod, as in Kubernetes.
    script = """
        import os, sys
        path = "/state/attempts"
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        print("attempt", n, flush=True)
        sys.exit(1 if n < 2 else 0)
    """
    kube.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "flaky"},
        "spec": {"restartPolicy": "OnFailure", "volumes": [{"name": "state", "emptyDir": {}}],
                 "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", textwrap.dedent(script)],
                                 "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]}})
    pod = wait_for(lambda: (p := kube.core.read_namespaced_pod_status("flaky", namespace)).status.phase
                   in ("Succeeded", "Failed") and p, 60, what="pod finished",
                   describe=lambda: pod_summary(kube, namespace))
    assert pod.status.phase == "Succeeded"
    (status,) = pod.status.container_statuses
    assert status.restart_count == 2
    assert status.last_state.terminated.exit_code == 1
    assert status.state.terminated.exit_code == 0


def test_init_container_then_readiness_probe(kube, namespace):
    init = "open('/www/ready.txt', 'w').write('warmed up')"
    serve = """
        import functools, http.server, os
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/www")
        http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), handler).serve_forever()
    """
    kube.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "web"},
        "spec": {"volumes": [{"name": "www", "emptyDir": {}}],
                 "initContainers": [{"name": "warm", "image": "python:3.11", "command": ["python", "-c", init],
                                     "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
                 "containers": [{"name": "main", "image": "python:3.11",
                                 "command": ["python", "-c", textwrap.dedent(serve)],
                                 "ports": [{"name": "http", "containerPort": 8080}],
                                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                                 "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                                 "readinessProbe": {"httpGet": {"path": "/ready.txt", "port": "http"},
                                                    "periodSeconds": 1}}]}})

    def ready():
        pod = kube.core.read_namespaced_pod_status("web", namespace)
        conds = {c.type: c.status for c in pod.status.conditions or []}
        return conds.get("Ready") == "True" and pod
    pod = wait_for(ready, 60, what="pod Ready", describe=lambda: pod_summary(kube, namespace))
    assert pod.status.init_container_statuses[0].state.terminated.reason == "Completed"
    assert pod.status.container_statuses[0].ready is True
    import urllib.request
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/ready.txt", timeout=5) as r:
        assert r.read() == b"warmed up"


def test_pod_reaches_the_api_with_its_service_account_token(kube, namespace):
    """In-cluster config works in pods: token + CA projected at the usual path,
    KUBERNETES_SERVICE_HOST/PORT point at the API server."""
    script = """
        from kubernetes import client, config
        config.load_incluster_config()
        review = client.AuthenticationV1Api().create_self_subject_review({})
        open("/dev/termination-log", "w").write(review.status.user_info.username)
    """
    kube.core.create_namespaced_pod(namespace, {
        "metadata": {"name": "whoami"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "kubetune/operator:dev", "command": ["python", "-c", textwrap.dedent(script)]}]}})
    pod = wait_for(lambda: (p := kube.core.read_namespaced_pod_status("whoami", namespace)).status.phase
                   in ("Succeeded", "Failed") and p, 60, what="pod finished",
                   describe=lambda: pod_summary(kube, namespace))
    assert terminated(pod).message == f"system:serviceaccount:{namespace}:default", \
        pod_summary(kube, namespace)


def test_a_component_that_fails_to_start_is_named_with_its_log_tail():
    from tests.harness import cluster
    from tests.harness.procs import ComponentFailed

    with pytest.raises(ComponentFailed) as failure:
        cluster.start(start_pod_runner=False, extra_args={"kube-apiserver": ["--no-such-flag"]})
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


def test_nodes_are_ready_untainted_and_their_leases_fresh(kube, pod_runner):
    from datetime import datetime, timezone

    for name in pod_runner.nodes:
        node = kube.core.read_node(name)
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        assert not node.spec.taints, "the node lifecycle controller sees healthy nodes"
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        lease = kube.coordination.read_namespaced_lease(name, "kube-node-lease")
        age = (datetime.now(timezone.utc) - lease.spec.renew_time).total_seconds()
        assert age < 15, f"lease of {name} renewed {age:.0f}s ago"
