"""The ValidatingAdmissionPolicy that has the API server enforce the admin policy
(`api.policy`) natively, in CEL: no webhook server to run.

Its `variables` and `validations` are generated from the policy's knobs, so the
API server, the operator and `kubetune validate` refuse the same specs. The
chart embeds the policy's whole spec (`charts/kubetune/files/admission-policy-spec.yaml`,
written by `kubetune crd --write`, checked by a test); its params are the
release's `KubetunePolicy`; FineTuneSweeps are checked on their template, so a
sweep that could never create its trials is refused when it is applied.
"""

from __future__ import annotations

from .job import GROUP, VERSION
from .policy import KNOBS, NAMESPACE_PLACEHOLDER, POLICY_KIND

RULES_FILE = "files/admission-policy-spec.yaml"  # under charts/kubetune/


def _roots(*fields: str) -> str:
    listed = " + ".join(f"params.spec.?{f}.orValue([])" for f in fields)
    return (f"({listed}).map(r, r.replace('{NAMESPACE_PLACEHOLDER}', request.namespace))"
            ".map(r, r.endsWith('/') ? r : r + '/')")


VARIABLES = [
    # A sweep's trials are FineTuneJobs of its template: checked when the sweep is applied.
    {"name": "spec", "expression": "object.kind == 'FineTuneSweep' ? object.spec.template : object.spec"},
    {"name": "where", "expression": "object.kind == 'FineTuneSweep' ? 'spec.template' : 'spec'"},
    {"name": "roots", "expression": _roots("storageRoots")},
    {"name": "readRoots", "expression": _roots("storageRoots", "readOnlyRoots")},
]


def validations() -> list[dict]:
    return [{
        "expression": knob.cel,
        "messageExpression": (f"variables.where + '.{knob.field}: ' + {knob.value_cel} + ' is not allowed by the admin policy "
                              f"(KubetunePolicy ' + params.metadata.name + ' {knob.knob}); ask your cluster admin to allow it, "
                              "or leave the field unset'"),
        "reason": "Forbidden",
    } for knob in KNOBS]


def admission_spec() -> dict:
    """The ValidatingAdmissionPolicy's spec: the chart embeds it as it is
    (`RULES_FILE`); its params are the release's KubetunePolicy."""
    return {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": f"{GROUP}/{VERSION}", "kind": POLICY_KIND},
        "matchConstraints": {"resourceRules": [{
            "apiGroups": [GROUP], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
            "resources": ["finetunejobs", "finetunesweeps"],
        }]},
        # An update that leaves the spec alone (Kopf's finalizer, an annotation)
        # is not judged again: a policy tightened later must not block a job's deletion.
        "matchConditions": [{"name": "spec-written", "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"}],
        "variables": VARIABLES,
        "validations": validations(),
    }


def admission_policy(name: str) -> dict:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name}, "spec": admission_spec()}
