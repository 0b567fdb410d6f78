"""`helm install` / `upgrade` / `uninstall` of the chart with the operator
image built here (make images), into namespaces under the `restricted` Pod
Security Standard, on the real node: the operator runs in its container
under the chart's ServiceAccount and RBAC, the trainer in its image.

- install, upgrade to namespaced scope, uninstall, with the operator pods
  Ready through their probes; what the chart's ServiceAccount may and may not
  do, as the API server's authorizer answers;
- end to end as a platform team installs it: the quickstart trains in the
  trainer's container (non-root, read-only root, as `kubectl exec` shows),
  its adapter and report land in MinIO, the kubelet reads its termination
  message, and the operator's log holds no 403;
- a verb taken from the chart's Role: the operator says so in the job's
  conditions and carries on, and goes on once the verb is back."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.cluster.operator_helpers import condition, create, events, jobs, quickstart, status, wait_phase
from tests.harness.waiting import wait_for

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


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


class Release:
    def __init__(self, kube, namespace: str, image: str):
        self.kube, self.namespace = kube, namespace
        self.name = "kt" + uuid.uuid4().hex[:6]
        self.repository, _, self.tag = image.rpartition(":")
        self.sa = f"system:serviceaccount:{namespace}:{self.name}-kubetune"
        self.deployment = f"{self.name}-kubetune"

    def helm(self, *args: str, check: bool = True):
        return run(tool("helm"), *args, "--kubeconfig", self.kube.kubeconfig, "--namespace", self.namespace,
                   check=check, timeout=240)

    def install(self, *values: str, verb: str = "install"):
        return self.helm(verb, self.name, str(CHART), "--wait", "--timeout", "180s",
                         "--set", f"image.repository={self.repository}", "--set", f"image.tag={self.tag}",
                         "--set", f"peering.name={self.name}", *values)

    def operator_pods(self) -> list[dict]:
        return self.kube.raw.get(f"/api/v1/namespaces/{self.namespace}/pods",
                                 labelSelector=f"app.kubernetes.io/instance={self.name}")["items"]

    def operator_log(self) -> str:
        """Every operator container's log (kubectl logs, from the kubelet)."""
        return "\n".join(self.kube.kubectl("-n", self.namespace, "logs", p["metadata"]["name"], "--all-containers").stdout
                         for p in self.operator_pods())

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
def release(kube, namespace, operator_image):
    kube.raw.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED}})
    rel = Release(kube, namespace, operator_image)
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
    assert dep["status"].get("readyReplicas") == 2  # their readiness probes answered, in a restricted namespace
    assert all(p["spec"]["nodeName"] and p["status"]["phase"] == "Running" for p in rel.operator_pods())
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


def _trainer_pod(kube, namespace: str, job: str) -> dict | None:
    items = kube.raw.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"kubetune.io/job={job}")["items"]
    return items[0] if items else None


def _settings(s3_env: dict, bucket, trainer_image: str, namespace: str) -> list[str]:
    """The chart's settings pointed at the test's MinIO bucket and the built
    trainer image, as a platform team would set them."""
    return ["--set", f"operator.trainerImage={trainer_image}",
            "--set", f"operator.defaultBucketUri={s3_env['KUBETUNE_DEFAULT_BUCKET_URI']}",
            "--set", f"operator.defaultS3Secret={s3_env['KUBETUNE_DEFAULT_S3_SECRET']}",
            "--set", f"operator.defaultS3Endpoint={s3_env['KUBETUNE_DEFAULT_S3_ENDPOINT']}",
            "--set", f"operator.defaultS3Region={s3_env['KUBETUNE_DEFAULT_S3_REGION']}",
            "--set", "operator.metricsScrapeInterval=1", "--set", "operator.logLevel=verbose",
            # The tiny model and data every test uploads, shared read-only as an admin would.
            "--set-json", f'policy.readOnlyRoots=["s3://{bucket.name}/models/","s3://{bucket.name}/data/"]',
            "--set-json", f'policy.admission.namespaceSelector={{"matchLabels":{{"kubernetes.io/metadata.name":"{namespace}"}}}}']


def test_helm_install_trains_the_quickstart_in_containers(kube, release, kubetune_crds, s3_env, bucket_with_assets, trainer_image):
    rel, bucket = release, bucket_with_assets
    rel.install(*_settings(s3_env, bucket, trainer_image, rel.namespace))
    dep = json.loads(kube.kubectl("-n", rel.namespace, "get", "deployment", rel.deployment, "-o", "json").stdout)
    assert dep["status"].get("readyReplicas") == 2
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kopf"] and "--all-namespaces" in container["args"]

    create(kube, rel.namespace, quickstart(bucket, "quickstart"))
    # A job whose Hugging Face token Secret does not exist, and one whose
    # Secret exists without the admin policy's label: the operator looks at
    # their metadata (the chart grants get on Secrets) before it creates anything.
    create(kube, rel.namespace, quickstart(bucket, "notoken", credentials={"hfToken": {"name": "no-such-token", "key": "token"}}))
    kube.raw.request("POST", f"/api/v1/namespaces/{rel.namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-creds"}, "stringData": {"password": "kt-db-4c1d"}})
    create(kube, rel.namespace, quickstart(bucket, "dbtoken", credentials={"hfToken": {"name": "db-creds", "key": "password"}}))

    # While it trains: in the trainer image's container, as a non-root user, on a read-only root.
    def running_trainer():
        pod = _trainer_pod(kube, rel.namespace, "quickstart")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return pod if statuses and "running" in statuses[0]["state"] else None

    pod = wait_for(running_trainer, 180, what="the trainer container running",
                   describe=lambda: json.dumps(status(kube, rel.namespace, "quickstart"))[:2000] + rel.operator_log()[-2000:])
    name = pod["metadata"]["name"]
    assert pod["spec"]["containers"][0]["image"] == trainer_image
    assert pod["status"]["containerStatuses"][0]["imageID"], "an image from the node's containerd"
    # (seconds after it started: the trainer is still importing torch, far from done)
    assert kube.kubectl("-n", rel.namespace, "exec", name, "--", "id", "-u").stdout.strip() == "1000"
    refused = kube.kubectl("-n", rel.namespace, "exec", name, "--", "touch", "/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused

    st = wait_phase(kube, rel.namespace, "quickstart", "Succeeded", "Failed", timeout=300)
    assert st["phase"] == "Succeeded", (st, rel.operator_log()[-3000:])
    assert st["progress"]["step"] == st["progress"]["totalSteps"] == 60
    adapter = st["output"]["adapterUri"].removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/"
    assert any(k.endswith("adapter_model.safetensors") for k in bucket.keys(adapter))
    report = st["output"]["reportUri"].removeprefix(f"s3://{bucket.name}/")
    assert bucket.client.head_object(Bucket=bucket.name, Key=report)["ContentLength"] > 0
    # The termination message, as the kubelet read it into the pod's status.
    finished = kube.raw.get(f"/api/v1/namespaces/{rel.namespace}/pods/{name}")
    terminated = finished["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    message = json.loads(terminated["message"])
    assert message["output"]["adapterUri"] == st["output"]["adapterUri"] and message["step"] == 60

    for job, reason, said in (("notoken", "SecretMissing", "Secret no-such-token not found"),
                              ("dbtoken", "SecretNotUsable", "Secret db-creds is not labelled kubetune.io/usable=true")):
        st = wait_for(lambda n=job, r=reason: (s := status(kube, rel.namespace, n)) and condition(s, "Valid").get("reason") == r and s,
                      timeout=60, what=f"{job} Pending with {reason}",
                      describe=lambda n=job: json.dumps(status(kube, rel.namespace, n)))
        assert st["phase"] == "Pending" and said in condition(st, "Valid")["message"]
    assert [j["metadata"]["name"] for j in jobs(kube, rel.namespace)] == ["quickstart-train"]

    log = rel.operator_log()
    assert "quickstart" in log  # the active replica's log: it did the work
    assert "kt-db-4c1d" not in log and "kt-db-4c1d" not in json.dumps(events(kube, rel.namespace, "dbtoken"))
    # Every request the operator made was allowed.
    # (a 403 status, not a timestamp's milliseconds: "00:09:46,403")
    forbidden = [line for line in log.splitlines() if re.search(r"(?<![,\d])403(?!\d)|[Ff]orbidden", line)]
    assert forbidden == [], "\n".join(forbidden[:10])
    assert all(s["restartCount"] == 0 for p in rel.operator_pods() for s in p["status"]["containerStatuses"])


def test_a_verb_taken_from_the_chart_s_role_is_said_in_the_job_s_conditions(kube, release, kubetune_crds, s3_env,
                                                                           bucket_with_assets, trainer_image):
    rel, bucket = release, bucket_with_assets
    rel.install("--set", "scope=namespaced", "--set", "replicaCount=1",
                *_settings(s3_env, bucket, trainer_image, rel.namespace))
    role_path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{rel.namespace}/roles/{rel.deployment}"
    role = kube.raw.get(role_path)
    granted = json.loads(json.dumps(role["rules"]))
    (rule,) = [r for r in role["rules"] if "jobs" in r.get("resources", []) and "batch" in r.get("apiGroups", [])]
    rule["verbs"].remove("create")
    kube.raw.request("PUT", role_path, role)
    wait_for(lambda: not rel.can("create", "jobs.batch"), 30, what="the Role without create on Jobs")

    create(kube, rel.namespace, quickstart(bucket, "norights"))

    def denied():
        st = status(kube, rel.namespace, "norights")
        return st if condition(st, "Valid").get("reason") == "PermissionDenied" else None

    st = wait_for(denied, 120, what="PermissionDenied in the job's conditions",
                  describe=lambda: json.dumps(status(kube, rel.namespace, "norights")) + rel.operator_log()[-2000:])
    message = condition(st, "Valid")["message"]
    assert st["phase"] == "Pending" and 'cannot create resource "jobs"' in message and rel.sa in message, message
    assert jobs(kube, rel.namespace) == []
    (pod,) = rel.operator_pods()
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0 and pod["status"]["containerStatuses"][0]["ready"]

    # The verb back: the operator, still the same process, creates the Job on its next look.
    role = kube.raw.get(role_path)
    role["rules"] = granted
    kube.raw.request("PUT", role_path, role)
    wait_for(lambda: [j["metadata"]["name"] for j in jobs(kube, rel.namespace)] == ["norights-train"], 60,
             what="the Job created once the Role grants it", describe=lambda: json.dumps(status(kube, rel.namespace, "norights")))
    (pod,) = rel.operator_pods()
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
