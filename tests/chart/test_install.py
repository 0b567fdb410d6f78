"""`helm install` / `upgrade` / `uninstall` against the real local control
plane (tests/harness), and `kubectl auth can-i` as the chart's ServiceAccount:
everything the operator needs is granted, nothing broader is.

The operator pods use an image tag declared simulated-ready to the pod runner
(Running and Ready, nothing executed), so these tests prove the chart, not the
operator. Running the operator itself under the chart's ServiceAccount is
test_operator_under_chart_rbac (needs kubetune_operator.handlers)."""

from __future__ import annotations

import json
import uuid

import pytest

from .chartlib import CHART, run, tool

pytestmark = [pytest.mark.chart, pytest.mark.cluster]

# Verbs the operator (and Kopf) use, in any namespace it serves.
NEEDED = [
    ("get", "finetunejobs.kubetune.io"), ("list", "finetunejobs.kubetune.io"), ("watch", "finetunejobs.kubetune.io"),
    ("patch", "finetunejobs.kubetune.io"), ("patch", "finetunejobs.kubetune.io", "status"),
    ("update", "finetunejobs.kubetune.io", "finalizers"),
    ("create", "configmaps"), ("get", "configmaps"), ("patch", "configmaps"),
    ("create", "jobs.batch"), ("get", "jobs.batch"), ("list", "jobs.batch"), ("watch", "jobs.batch"), ("patch", "jobs.batch"),
    ("create", "services"), ("patch", "services"),
    ("create", "deployments.apps"), ("patch", "deployments.apps"), ("watch", "deployments.apps"),
    ("get", "pods"), ("list", "pods"), ("watch", "pods"),
    ("create", "events"), ("create", "events.events.k8s.io"),
]
# Never: secrets, exec/attach/logs, deleting anything, creating pods directly
# (a FineTuneJob must not become a way to run arbitrary pods), RBAC, nodes.
FORBIDDEN = [
    ("get", "secrets"), ("list", "secrets"), ("create", "secrets"), ("patch", "secrets"), ("delete", "secrets"),
    ("create", "pods", "exec"), ("create", "pods", "attach"), ("get", "pods", "log"), ("create", "pods"),
    ("delete", "pods"), ("delete", "jobs.batch"), ("delete", "finetunejobs.kubetune.io"), ("create", "finetunejobs.kubetune.io"),
    ("update", "finetunejobs.kubetune.io"), ("delete", "configmaps"),
    ("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts"), ("create", "serviceaccounts", "token"), ("impersonate", "serviceaccounts"),
    ("create", "persistentvolumeclaims"), ("patch", "namespaces"),
]
FORBIDDEN_CLUSTER = [
    ("patch", "nodes"), ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"), ("create", "namespaces"), ("delete", "namespaces"),
    ("create", "clusterkopfpeerings.kopf.dev"), ("delete", "clusterkopfpeerings.kopf.dev"),
]


class Release:
    def __init__(self, kube, namespace: str):
        self.kube, self.namespace = kube, namespace
        self.name = "kt" + uuid.uuid4().hex[:6]
        # A tag only this release uses, declared simulated-ready below.
        self.image = f"ghcr.io/kubetune/operator:test-{self.name}"
        self.sa = f"system:serviceaccount:{namespace}:{self.name}-kubetune"

    def helm(self, *args: str, check: bool = True):
        return run(tool("helm"), *args, "--kubeconfig", self.kube.kubeconfig, "--namespace", self.namespace,
                   check=check, timeout=240)

    def install(self, *values: str, verb: str = "install"):
        return self.helm(verb, self.name, str(CHART), "--wait", "--timeout", "180s",
                         "--set", f"image.tag=test-{self.name}", "--set", f"peering.name={self.name}", *values)

    def can(self, verb: str, resource: str, sub: str | None = None, namespace: str | None = None,
            all_namespaces: bool = False) -> bool:
        args = ["auth", "can-i", verb, resource, "--as", self.sa]
        if sub:
            args += [f"--subresource={sub}"]
        args += ["--all-namespaces"] if all_namespaces else ["-n", namespace or self.namespace]
        proc = self.kube.kubectl(*args, check=False)
        assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
        return proc.stdout.strip() == "yes"

    def objects(self, kind: str, namespaced: bool = True) -> list[str]:
        args = ["get", kind, "-l", f"app.kubernetes.io/instance={self.name}", "-o", "json"]
        args += ["-A"] if namespaced else []
        return [f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
                for i in json.loads(self.kube.kubectl(*args).stdout)["items"]]


@pytest.fixture
def release(kube, namespace, pod_runner):
    rel = Release(kube, namespace)
    with pod_runner.simulate_ready(rel.image):
        yield rel
        rel.helm("uninstall", rel.name, "--wait", check=False)


@pytest.fixture
def other_namespace(kube):
    name = "kt-other-" + uuid.uuid4().hex[:6]
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _denied(rel, checks, **where):
    return [c for c in checks if rel.can(c[0], c[1], *(c[2:] or [None]), **where)]


def _missing(rel, checks, **where):
    return [c for c in checks if not rel.can(c[0], c[1], *(c[2:] or [None]), **where)]


def test_install_cluster_scope_upgrade_to_namespaced_and_uninstall(kube, release, other_namespace):
    rel = release
    out = rel.install()
    # NOTES tell the user how to submit a first job.
    assert "kind: FineTuneJob" in out.stdout and "kubectl -n default apply -f -" in out.stdout

    # CRDs (from crds/), RBAC, Deployment with both replicas ready, peering object.
    crds = {i["metadata"]["name"] for i in json.loads(kube.kubectl("get", "crd", "-o", "json").stdout)["items"]}
    assert {"finetunejobs.kubetune.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    assert rel.objects("clusterrole", namespaced=False) == [f"/{rel.name}-kubetune"]
    assert rel.objects("clusterrolebinding", namespaced=False) == [f"/{rel.name}-kubetune"]
    assert rel.objects("serviceaccount") == [f"{rel.namespace}/{rel.name}-kubetune"]
    dep = json.loads(kube.kubectl("-n", rel.namespace, "get", "deployment", f"{rel.name}-kubetune", "-o", "json").stdout)
    assert dep["status"].get("readyReplicas") == 2
    kube.kubectl("get", "clusterkopfpeering", rel.name)

    # Sufficient everywhere (cluster scope), and no broader.
    assert _missing(rel, NEEDED, namespace=other_namespace) == []
    assert _missing(rel, [("list", "finetunejobs.kubetune.io"), ("watch", "pods"), ("watch", "jobs.batch")], all_namespaces=True) == []
    assert rel.can("patch", f"clusterkopfpeerings.kopf.dev/{rel.name}", namespace="")
    assert rel.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert _denied(rel, FORBIDDEN, namespace=other_namespace) == []
    assert _denied(rel, FORBIDDEN_CLUSTER) == []
    assert not rel.can("patch", "clusterkopfpeerings.kopf.dev/someone-else")

    # Upgrade to namespaced scope: the ClusterRole goes, a Role in the release
    # namespace comes, and the other namespace is out of reach.
    rel.install("--set", "scope=namespaced", "--set-json", "operator.clientQps=5", verb="upgrade")
    assert rel.objects("clusterrole", namespaced=False) == []
    assert rel.objects("clusterrolebinding", namespaced=False) == []
    assert rel.objects("role") == [f"{rel.namespace}/{rel.name}-kubetune"]
    dep = json.loads(kube.kubectl("-n", rel.namespace, "get", "deployment", f"{rel.name}-kubetune", "-o", "json").stdout)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert f"--namespace={rel.namespace}" in c["args"] and "--all-namespaces" not in c["args"]
    assert {e["name"]: e.get("value") for e in c["env"]}["KUBETUNE_CLIENT_QPS"] == "5"
    kube.kubectl("-n", rel.namespace, "get", "kopfpeering", rel.name)
    assert _missing(rel, NEEDED) == []
    assert rel.can("patch", f"kopfpeerings.kopf.dev/{rel.name}")
    assert _denied(rel, NEEDED, namespace=other_namespace) == [], "namespaced mode must not reach other namespaces"
    assert _denied(rel, [("list", "finetunejobs.kubetune.io"), ("list", "pods")], all_namespaces=True) == []
    assert _denied(rel, FORBIDDEN) == []
    assert _denied(rel, FORBIDDEN_CLUSTER + [("list", "customresourcedefinitions.apiextensions.k8s.io")]) == []
    assert "REVISION: 2" in rel.helm("status", rel.name).stdout

    # Uninstall removes the release's objects and keeps the CRDs (Helm never deletes crds/).
    rel.helm("uninstall", rel.name, "--wait")
    assert rel.objects("deployment") == [] and rel.objects("role") == [] and rel.objects("serviceaccount") == []
    kube.kubectl("get", "crd", "finetunejobs.kubetune.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev")
