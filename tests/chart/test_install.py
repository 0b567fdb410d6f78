"""`helm install` / `upgrade` / `uninstall` against the real local control
plane (tests/harness), and `kubectl auth can-i` as the chart's ServiceAccount:
everything the operator needs is granted, nothing broader is.

The operator pods use an image tag declared simulated-ready to the pod runner
(Running and Ready, nothing executed): the pod runner has no ServiceAccount
token projection, and the chart's pods are not what these tests prove.
test_operator_with_chart_credentials_completes_the_quickstart runs the operator
as a local process with the installed Deployment's exact arguments and settings
and the chart ServiceAccount's own token, and trains the quickstart job."""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster.operator_helpers import condition, create, events, jobs, quickstart, status, wait_phase
from tests.harness.waiting import wait_for
from tests.harness.operator_fixture import OperatorProcess, free_port

from .chartlib import CHART, run, tool

pytestmark = [pytest.mark.chart, pytest.mark.cluster]

# Verbs the operator (and Kopf) use, in any namespace it serves: each one is
# needed (docs/helm.md says where), and nothing beside them is granted (below).
NEEDED = [
    ("get", "finetunejobs.kubetune.io"), ("list", "finetunejobs.kubetune.io"), ("watch", "finetunejobs.kubetune.io"),
    ("patch", "finetunejobs.kubetune.io"), ("patch", "finetunejobs.kubetune.io", "status"),
    ("update", "finetunejobs.kubetune.io", "finalizers"), ("create", "finetunejobs.kubetune.io"),
    ("list", "finetunesweeps.kubetune.io"), ("watch", "finetunesweeps.kubetune.io"),
    ("patch", "finetunesweeps.kubetune.io"), ("patch", "finetunesweeps.kubetune.io", "status"),
    ("update", "finetunesweeps.kubetune.io", "finalizers"),
    ("create", "configmaps"), ("get", "configmaps"), ("patch", "configmaps"),
    ("create", "jobs.batch"), ("get", "jobs.batch"), ("list", "jobs.batch"), ("watch", "jobs.batch"), ("patch", "jobs.batch"),
    ("create", "services"), ("get", "services"), ("patch", "services"), ("delete", "services"),
    ("create", "deployments.apps"), ("get", "deployments.apps"), ("list", "deployments.apps"), ("watch", "deployments.apps"),
    ("patch", "deployments.apps"), ("delete", "deployments.apps"),
    ("list", "pods"), ("watch", "pods"), ("get", "secrets"),
    ("create", "events"),
    ("create", "pods", "eviction"), ("list", "workloads.kueue.x-k8s.io"), ("patch", "workloads.kueue.x-k8s.io"),
]
# Never: Secrets beyond their metadata by name (list, watch, write), exec/attach/logs,
# deleting anything but a job's own vLLM Deployment and Service, creating pods directly (a FineTuneJob must not become a way
# to run arbitrary pods), RBAC, nodes; nor verbs nothing uses (list/watch of
# ConfigMaps and Services, get of pods, sweeps or status, events.k8s.io, patching events).
FORBIDDEN = [
    ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("patch", "secrets"), ("delete", "secrets"),
    ("create", "pods", "exec"), ("create", "pods", "attach"), ("get", "pods", "log"), ("create", "pods"),
    ("delete", "pods"), ("delete", "jobs.batch"), ("delete", "finetunejobs.kubetune.io"),
    ("update", "finetunejobs.kubetune.io"), ("delete", "finetunesweeps.kubetune.io"), ("create", "finetunesweeps.kubetune.io"), ("delete", "configmaps"),
    ("create", "roles.rbac.authorization.k8s.io"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts"), ("create", "serviceaccounts", "token"), ("impersonate", "serviceaccounts"),
    ("create", "persistentvolumeclaims"), ("patch", "namespaces"),
    ("list", "configmaps"), ("watch", "configmaps"), ("list", "services"), ("watch", "services"), ("get", "pods"),
    ("get", "finetunesweeps.kubetune.io"), ("get", "finetunejobs.kubetune.io", "status"), ("patch", "events"),
    ("create", "events.events.k8s.io"),
]
# Asked about with no namespace, as kubectl does for them.
CLUSTER_SCOPED = {"nodes", "namespaces", "clusterroles", "clusterrolebindings", "customresourcedefinitions", "clusterkopfpeerings",
                  "kubetunepolicies", "validatingadmissionpolicies", "validatingadmissionpolicybindings"}
FORBIDDEN_CLUSTER = [
    ("patch", "nodes"), ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"), ("create", "namespaces"), ("delete", "namespaces"),
    ("create", "clusterkopfpeerings.kopf.dev"), ("delete", "clusterkopfpeerings.kopf.dev"),
    # The admin policy is the admin's: the operator reads it from its own settings, never from or into the API.
    ("get", "kubetunepolicies.kubetune.io"), ("patch", "kubetunepolicies.kubetune.io"),
    ("patch", "validatingadmissionpolicies.admissionregistration.k8s.io"),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io"),
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
        """What the API server's authorizer answers for the chart's ServiceAccount
        (a SubjectAccessReview naming the group exactly: `kubectl auth can-i`
        resolves `workloads.kueue.x-k8s.io` through discovery, and answers no
        on a cluster where Kueue's CRDs are not installed yet)."""
        kind, _, name = resource.partition("/")
        plural, _, group = kind.partition(".")
        cluster_wide = all_namespaces or plural in CLUSTER_SCOPED
        attributes = {"verb": verb, "group": group, "resource": plural, "subresource": sub or "", "name": name,
                      "namespace": "" if cluster_wide else (namespace or self.namespace)}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": self.sa, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{self.namespace}",
                                                       "system:authenticated"],
                           "resourceAttributes": attributes}}
        answer = self.kube.raw.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer["status"].get("allowed"))

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
    assert {"finetunejobs.kubetune.io", "finetunesweeps.kubetune.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
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


# --------------------------------------------------------------------------- the operator under the chart's RBAC


def _service_account_kubeconfig(kube, rel, path) -> str:
    """A kubeconfig holding only a token the API server issued to the chart's
    ServiceAccount: requests are authorised exactly as the operator pod's are."""
    token = kube.kubectl("create", "token", f"{rel.name}-kubetune", "-n", rel.namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(Path(kube.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }))
    return str(path)


def _chart_operator_env(container: dict, kubeconfig: str) -> dict[str, str]:
    """The operator container's environment as the chart renders it, on top of
    this process's (PATH, the venv) with no KUBETUNE_* setting of our own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBETUNE_") and k != "KUBECONFIG"}
    for item in container["env"]:
        if "valueFrom" not in item:
            env[item["name"]] = item.get("value", "")  # the API server drops empty values
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", item
            env[item["name"]] = "local-operator"
    # Port 8080 belongs to whoever has it on this machine; in a pod it is the pod's own.
    env["KUBETUNE_METRICS_PORT"] = str(free_port())
    env["KUBECONFIG"] = kubeconfig
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_operator_with_chart_credentials_completes_the_quickstart(kube, release, kubetune_crds, s3_env, bucket_with_assets, tmp_path):
    rel, bucket = release, bucket_with_assets
    # The chart's settings, pointed at the test's MinIO bucket as a platform team would.
    rel.install("--set", f"operator.defaultBucketUri={s3_env['KUBETUNE_DEFAULT_BUCKET_URI']}",
                "--set", f"operator.defaultS3Secret={s3_env['KUBETUNE_DEFAULT_S3_SECRET']}",
                "--set", f"operator.defaultS3Endpoint={s3_env['KUBETUNE_DEFAULT_S3_ENDPOINT']}",
                "--set", f"operator.defaultS3Region={s3_env['KUBETUNE_DEFAULT_S3_REGION']}",
                "--set", "operator.metricsScrapeInterval=1", "--set", "operator.logLevel=verbose",
                # The tiny model and data every test uploads, shared read-only as an admin would.
                "--set-json", f'policy.readOnlyRoots=["s3://{bucket.name}/models/","s3://{bucket.name}/data/"]',
                "--set-json", f'policy.admission.namespaceSelector={{"matchLabels":{{"kubernetes.io/metadata.name":"{rel.namespace}"}}}}')
    dep = json.loads(kube.kubectl("-n", rel.namespace, "get", "deployment", f"{rel.name}-kubetune", "-o", "json").stdout)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kopf"] and "--all-namespaces" in container["args"]
    kubeconfig = _service_account_kubeconfig(kube, rel, tmp_path / "operator.kubeconfig")
    op = OperatorProcess(rel.namespace, _chart_operator_env(container, kubeconfig), tmp_path / "operator.log",
                         kopf_args=container["args"])
    try:
        op.start()
        create(kube, rel.namespace, quickstart(bucket, "quickstart"))
        # A job whose Hugging Face token Secret does not exist, and one whose
        # Secret exists without the admin policy's label: the operator looks at
        # their metadata (the chart grants get on Secrets) before it creates anything.
        create(kube, rel.namespace, quickstart(bucket, "notoken", credentials={"hfToken": {"name": "no-such-token", "key": "token"}}))
        kube.raw.request("POST", f"/api/v1/namespaces/{rel.namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-creds"}, "stringData": {"password": "kt-db-4c1d"}})
        create(kube, rel.namespace, quickstart(bucket, "dbtoken", credentials={"hfToken": {"name": "db-creds", "key": "password"}}))
        st = wait_phase(kube, rel.namespace, "quickstart", "Succeeded", "Failed", timeout=300, operator=op)
        assert st["phase"] == "Succeeded", st
        assert st["progress"]["step"] == st["progress"]["totalSteps"] == 60
        adapter = st["output"]["adapterUri"].removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/"
        assert any(k.endswith("adapter_model.safetensors") for k in bucket.keys(adapter))

        for name, reason, said in (("notoken", "SecretMissing", "Secret no-such-token not found"),
                                   ("dbtoken", "SecretNotUsable", "Secret db-creds is not labelled kubetune.io/usable=true")):
            st = wait_for(lambda n=name, r=reason: (s := status(kube, rel.namespace, n)) and condition(s, "Valid").get("reason") == r and s,
                          timeout=60, what=f"{name} Pending with {reason}",
                          describe=lambda n=name: json.dumps(status(kube, rel.namespace, n)) + op.log_tail(20))
            assert st["phase"] == "Pending" and said in condition(st, "Valid")["message"]
        assert [j["metadata"]["name"] for j in jobs(kube, rel.namespace)] == ["quickstart-train"]
    finally:
        op.stop()
    log = op.log()
    assert "kt-db-4c1d" not in log and "kt-db-4c1d" not in json.dumps(events(kube, rel.namespace, "dbtoken"))
    # Every request the operator made was allowed.
    # (a 403 status, not a timestamp's milliseconds: "00:09:46,403")
    forbidden = [line for line in log.splitlines() if re.search(r"(?<![,\d])403(?!\d)|[Ff]orbidden", line)]
    assert forbidden == [], "\n".join(forbidden[:10])
