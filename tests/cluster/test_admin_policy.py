"""The admin policy enforced by the API server itself: the chart's
ValidatingAdmissionPolicy (CEL, no webhook server), its binding and the
release's KubetunePolicy, rendered by `helm template` and applied to the real
kube-apiserver. Every spec of `tests/unit/policy_cases` is refused naming the
field and the knob in a namespace under the chart's default policy, and
accepted in a namespace whose policy allows it; a sweep is judged on its
template; a later change to a job that leaves its spec alone (a finalizer) is
not judged again. Requests are dry runs: nothing is stored, every case costs
one round trip."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from tests.chart.chartlib import template
from tests.harness.kubeapi import ApiError
from tests.harness.waiting import wait_for
from tests.unit.policy_cases import BASE_POLICY, BUCKET, POLICY_CASES, PolicyCase, allowed_manifest

pytestmark = pytest.mark.cluster

FTJ = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"
SWEEPS = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunesweeps"


def _union_of_allowances() -> dict:
    """One policy that allows every case that can be allowed (what each case's `allow` adds)."""
    out: dict = {"readOnlyRoots": list(BASE_POLICY["readOnlyRoots"])}
    for case in POLICY_CASES:
        for key, value in (case.allow or {}).items():
            if isinstance(value, list):
                out[key] = out.get(key, []) + [v for v in value if v not in out.get(key, [])]
            elif isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


class PolicyRelease:
    """The chart's admission objects for one release, bound to one namespace."""

    def __init__(self, kube, namespace: str, policy: dict):
        self.kube, self.namespace = kube, namespace
        self.release = "ktp" + uuid.uuid4().hex[:6]
        values = {"policy": {**policy, "admission": {"enabled": True, "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}, "operator": {"defaultBucketUri": f"s3://{BUCKET}"}}
        rendered = template(extra=["--show-only", "templates/policy.yaml", "--set-json", f"policy={json.dumps(values['policy'])}",
                                   "--set", f"operator.defaultBucketUri=s3://{BUCKET}"])
        # Every name of the release, the binding's policyName included: a binding naming another release's
        # policy passed only when that release happened to be installed in the cluster before this module.
        self.docs = [d for d in yaml.safe_load_all(rendered.stdout.replace("kt-kubetune", self.release)) if d]

    def apply(self) -> None:
        self.kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(self.docs))

    def delete(self) -> None:
        self.kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(self.docs), check=False)


def dry_run(kube, namespace: str, body: dict, path: str = FTJ) -> tuple[int, str]:
    """(HTTP status, message) of a dry-run create: admission runs, nothing is stored."""
    try:
        kube.raw.request("POST", path.format(ns=namespace), body, params={"dryRun": "All"})
        return 201, ""
    except ApiError as exc:
        return exc.status, exc.message


@pytest.fixture(scope="module")
def policy_namespaces(kube, kubetune_crds):
    """(a namespace under the chart's default policy plus a shared read-only prefix, one whose policy allows every case)."""
    names = [f"kt-policy-{kind}-{uuid.uuid4().hex[:5]}" for kind in ("strict", "lenient")]
    releases = []
    for name, policy in zip(names, ({"readOnlyRoots": BASE_POLICY["readOnlyRoots"]}, _union_of_allowances())):
        kube.kubectl("create", "namespace", name)
        release = PolicyRelease(kube, name, policy)
        release.apply()
        releases.append(release)
    # The API server acts on a new policy once its informers saw it: wait until it refuses a known-bad job
    # (in the lenient namespace, one that no policy allows: a URI climbing out of its root).
    unallowable = next(case for case in POLICY_CASES if case.allow is None)
    for name, probe in zip(names, (POLICY_CASES[-1], unallowable)):
        wait_for(lambda n=name, c=probe: dry_run(kube, n, c.manifest(n, "probe"))[0] in (400, 403, 422),
                 timeout=30, what=f"the admission policy active in {name}")
    wait_for(lambda: dry_run(kube, names[1], POLICY_CASES[1].manifest(names[1], "probe"))[0] == 201, timeout=30,
             what="the lenient policy's allowances active")
    yield names
    for release in releases:
        release.delete()
    for name in names:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_policy_allows_the_base_job(kube, policy_namespaces):
    strict, _ = policy_namespaces
    assert dry_run(kube, strict, allowed_manifest(strict)) == (201, "")


@pytest.mark.parametrize("case", POLICY_CASES, ids=lambda c: c.id)
def test_the_api_server_refuses_what_the_policy_does_not_allow(kube, policy_namespaces, case: PolicyCase):
    strict, lenient = policy_namespaces
    status, message = dry_run(kube, strict, case.manifest(strict))
    assert status == 403, message
    assert f"spec.{case.field}" in message and f"{case.knob})" in message and "admin policy" in message, message
    status, message = dry_run(kube, lenient, case.manifest(lenient))
    assert (status == 201) is (case.allow is not None), message


def test_a_sweep_is_judged_on_its_template(kube, policy_namespaces):
    strict, _ = policy_namespaces
    template_spec = POLICY_CASES[0].manifest(strict)["spec"]
    template_spec["dataset"]["evalSplit"] = 0.1
    sweep = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "sweep"},
             "spec": {"template": template_spec, "maxTrials": 2,
                      "parameters": [{"path": "training.learningRate", "values": [0.001, 0.002]}]}}
    status, message = dry_run(kube, strict, sweep, SWEEPS)
    assert status == 403 and "spec.template.model.trustRemoteCode" in message, message


def test_a_tightened_policy_still_lets_a_stored_job_lose_its_finalizer(kube, kubetune_crds):
    """A job stored while the policy allowed it is judged again only when its
    spec changes: removing a finalizer (its deletion) goes through, an edit of
    its spec does not."""
    namespace = "kt-policy-later-" + uuid.uuid4().hex[:5]
    kube.kubectl("create", "namespace", namespace)
    release = PolicyRelease(kube, namespace, {"trustRemoteCode": True})
    try:
        release.apply()
        job = POLICY_CASES[0].manifest(namespace, "older")  # trustRemoteCode: allowed for now
        job["metadata"]["finalizers"] = ["kubetune.io/test"]
        wait_for(lambda: dry_run(kube, namespace, job)[0] == 201, timeout=30, what="the policy allowing remote code")
        kube.raw.request("POST", FTJ.format(ns=namespace), job)
        for doc in release.docs:
            if doc["kind"] == "KubetunePolicy":
                doc["spec"]["trustRemoteCode"] = False
        release.apply()
        wait_for(lambda: dry_run(kube, namespace, dict(job, metadata={"name": "newer"}))[0] == 403, timeout=30,
                 what="the tightened policy refusing remote code")
        path = f"{FTJ.format(ns=namespace)}/older"
        with pytest.raises(ApiError) as refused:
            kube.raw.merge_patch(path, {"spec": {"training": {"maxSteps": 7}}})
        assert refused.value.status == 403 and "spec.model.trustRemoteCode" in refused.value.message
        kube.raw.merge_patch(path, {"metadata": {"finalizers": None}})
        kube.raw.request("DELETE", path)
    finally:
        release.delete()
        kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
