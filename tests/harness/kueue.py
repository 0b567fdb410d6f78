"""Kueue on the test control plane: the real `kueue` manager (built and cached by
``hack/cluster-tools/build-kueue.sh``), its CRDs, its webhooks, one
ResourceFlavor and one ClusterQueue.

There is no kube-proxy and no cluster DNS here, so the webhooks that Kueue's
manifests point at a Service are registered by URL on loopback instead, with a
serving certificate from the harness's CA (the API server trusts its caBundle).
Only the webhooks of what these tests use are registered: Kueue's own resources
and ``batch/v1`` Jobs (the ``batch/job`` integration is the only one enabled).
The Job webhooks are scoped to namespaces labelled ``kubetune.io/kueue=enabled``
(``Kueue.local_queue`` labels the test's namespace): upstream they see every
Job, but a session cluster is shared with tests that never start Kueue, and a
Job webhook with ``failurePolicy: Fail`` whose server is gone would refuse every
Job of the cluster.

Kueue runs out of cluster with the admin kubeconfig (RBAC is not what these
tests are about) in a private mount namespace, where the certificate directory
it insists on for its metrics server (``/etc/kueue/metrics/certs`` when it does
not manage certificates itself) is bind-mounted from the run directory.

    kueue = start(cluster)            # Kueue, CRDs, webhooks, flavor, ClusterQueue
    kueue.local_queue(namespace)      # a LocalQueue "training" in a test namespace
    kueue.stop()                      # webhooks removed first, then the process
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import procs
from .certs import Pki, serving_cert
from .cluster import REPO, Cluster
from .kubeapi import ApiError, KubeApi
from .waiting import wait_for

API = "/apis/kueue.x-k8s.io/v1beta2"
SYSTEM_NAMESPACE = "kueue-system"
FLAVOR = "default-flavor"
CLUSTER_QUEUE = "kubetune-training"
LOCAL_QUEUE = "training"
NAMESPACE_LABEL = "kubetune.io/kueue"
# One training job at a time: the tests' queued jobs each ask for 2 CPUs. GPUs
# and memory are covered (a workload asking for a resource no flavor covers is
# never admitted) with room to spare.
QUOTA = {"cpu": "2", "memory": "64Gi", "nvidia.com/gpu": "16"}
WEBHOOK_GROUPS = {"batch", "kueue.x-k8s.io"}
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
WEBHOOK_CONFIGS = {"MutatingWebhookConfiguration": "kubetune-test-kueue-mutating",
                   "ValidatingWebhookConfiguration": "kubetune-test-kueue-validating"}
METRICS_CERTS = "/etc/kueue/metrics/certs"


def kueue_dir() -> Path:
    """The cached Kueue build (binary, CRDs, webhook manifests); built on first use."""
    return procs.setup_output("KUBETUNE_KUEUE_DIR", REPO / "hack/cluster-tools/build-kueue.sh")


@dataclass
class Kueue:
    cluster: Cluster
    api: KubeApi
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return procs.log_tail(self.log_path, lines)

    def local_queue(self, namespace: str, name: str = LOCAL_QUEUE, cluster_queue: str = CLUSTER_QUEUE) -> str:
        """A LocalQueue in ``namespace`` feeding ``cluster_queue``; the namespace is
        labelled so that Kueue's Job webhooks see its Jobs."""
        self.api.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {NAMESPACE_LABEL: "enabled"}}})
        _create(self.api, f"{API}/namespaces/{namespace}/localqueues", {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cluster_queue}})
        return name

    def workloads(self, namespace: str) -> list[dict]:
        return self.api.get(f"{API}/namespaces/{namespace}/workloads")["items"]

    def stop(self) -> None:
        for kind, name in WEBHOOK_CONFIGS.items():
            try:
                self.api.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s/{name}")
            except ApiError as e:
                if e.status != 404:
                    raise
        if self.proc.poll() is None:
            procs.stop_group(self.proc.pid, grace=5)


def start(cluster: Cluster, die_with_parent: bool = True) -> Kueue:
    """Kueue up and serving its webhooks, with the flavor and the ClusterQueue."""
    built = kueue_dir()
    run = Path(cluster.run_dir) / "kueue"
    run.mkdir(parents=True, exist_ok=True)
    api = KubeApi(cluster.kubeconfig)
    webhook_port, health_port = procs.free_ports(2)
    certs = _certs(Pki(Path(cluster.run_dir) / "pki"), run / "certs")
    _install_crds(cluster, built, run, webhook_port)
    _create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}})
    config = run / "config.yaml"
    config.write_text(yaml.safe_dump(_configuration(webhook_port, health_port, certs)))
    log_path = Path(cluster.run_dir) / "logs" / "kueue.log"
    script = (f"mkdir -p {METRICS_CERTS} && mount --bind {certs} {METRICS_CERTS} && "
              f"exec {built / 'bin' / 'kueue'} --config {config} --zap-log-level=2")
    proc = procs.spawn(["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", script], log_path,
                       env={**os.environ, "KUBECONFIG": cluster.kubeconfig}, die_with_parent=die_with_parent)
    kueue = Kueue(cluster, api, proc, log_path)
    try:
        procs.wait_until(lambda: _http_ok(f"http://127.0.0.1:{health_port}/readyz"), 90, "kueue", proc, log_path)
        _register_webhooks(api, built, webhook_port, Pki(Path(cluster.run_dir) / "pki"))
        _queues(api)
    except BaseException:
        kueue.stop()
        raise
    return kueue


def _certs(pki: Pki, target: Path) -> Path:
    cert, key = serving_cert(pki, "kueue-webhook")
    target.mkdir(parents=True, exist_ok=True)
    (target / "tls.crt").write_bytes(cert.read_bytes())
    (target / "tls.key").write_bytes(key.read_bytes())
    return target


def _configuration(webhook_port: int, health_port: int, certs: Path) -> dict:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": SYSTEM_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        # The on-demand visibility API server wants certificates of its own and
        # an APIService; nothing here reads pending workloads through it.
        "featureGates": {"VisibilityOnDemand": False},
    }


def _ca_bundle(pki: Pki) -> str:
    return base64.b64encode(pki.ca_cert.read_bytes()).decode()


def _install_crds(cluster: Cluster, built: Path, run: Path, webhook_port: int) -> None:
    """Kueue's CRDs; the served versions convert through its /convert endpoint."""
    bundle = _ca_bundle(Pki(Path(cluster.run_dir) / "pki"))
    docs = []
    for path in sorted((built / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["spec"]["names"]["plural"] in CONVERTED:
                doc["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/convert", "caBundle": bundle}}}
            if doc:
                docs.append(doc)
    manifest = run / "crds.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    kubectl = [str(Path(cluster.tools_bin) / "kubectl"), "--kubeconfig", cluster.kubeconfig]
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(manifest)],
                   check=True, capture_output=True, text=True)
    names = [f"crd/{d['metadata']['name']}" for d in docs]
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", *names],
                   check=True, capture_output=True, text=True)


def _register_webhooks(api: KubeApi, built: Path, port: int, pki: Pki) -> None:
    bundle = _ca_bundle(pki)
    for doc in yaml.safe_load_all((built / "webhooks.yaml").read_text()):
        if not doc:
            continue
        hooks = []
        for hook in doc["webhooks"]:
            groups = {g for rule in hook["rules"] for g in rule["apiGroups"]}
            if not groups <= WEBHOOK_GROUPS:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
            if "batch" in groups:
                hook["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "enabled"}}
            hooks.append(hook)
        kind = doc["kind"]
        body = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                "metadata": {"name": WEBHOOK_CONFIGS[kind]}, "webhooks": hooks}
        plural = f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s"
        try:
            api.request("DELETE", f"{plural}/{WEBHOOK_CONFIGS[kind]}")
        except ApiError as e:
            if e.status != 404:
                raise
        api.request("POST", plural, body)


def _queues(api: KubeApi) -> None:
    """The flavor and the ClusterQueue, through Kueue's own webhooks (which also
    proves they answer): retried while its webhook server is still starting."""
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": FLAVOR}, "spec": {}}
    queue = {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": CLUSTER_QUEUE},
        "spec": {
            "namespaceSelector": {},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [{
                "coveredResources": sorted(QUOTA),
                "flavors": [{"name": FLAVOR, "resources": [{"name": r, "nominalQuota": q} for r, q in sorted(QUOTA.items())]}],
            }],
        },
    }
    for path, body in ((f"{API}/resourceflavors", flavor), (f"{API}/clusterqueues", queue)):
        wait_for(lambda: _create(api, path, body, retry_webhook=True), timeout=30, what=f"create {body['kind']}")
    wait_for(lambda: _active(api), timeout=30, what=f"ClusterQueue {CLUSTER_QUEUE} Active")


def _active(api: KubeApi) -> bool:
    cq = api.get(f"{API}/clusterqueues/{CLUSTER_QUEUE}")
    return any(c["type"] == "Active" and c["status"] == "True" for c in (cq.get("status") or {}).get("conditions") or [])


def _create(api: KubeApi, path: str, body: dict, retry_webhook: bool = False) -> bool:
    try:
        api.request("POST", path, body)
    except ApiError as e:
        if e.status == 409:
            return True
        if retry_webhook and e.status >= 500:
            return False  # the webhook server is not answering yet
        raise
    return True


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200
