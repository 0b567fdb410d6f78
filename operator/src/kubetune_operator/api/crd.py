"""Generate the CustomResourceDefinitions from the pydantic models (the
structural translation is `schema.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import model_schema
from .job import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from .spec import FineTuneJobSpec
from .status import FineTuneJobStatus

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.metrics.trainLoss"},
    {"name": "Eval", "type": "string", "jsonPath": ".status.evaluation.summary"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


SWEEP_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Trials", "type": "string", "jsonPath": ".status.summary", "description": "finished / maxTrials"},
    {"name": "Best", "type": "number", "jsonPath": ".status.best.objective", "description": "the best trial's objective"},
    {"name": "Best trial", "type": "string", "jsonPath": ".status.best.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


POLICY_PRINTER_COLUMNS = [
    {"name": "Secret label", "type": "string", "jsonPath": ".spec.secretLabel"},
    {"name": "Remote code", "type": "boolean", "jsonPath": ".spec.trustRemoteCode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and the models its CRD is generated from."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    description: str
    spec: type
    status: type | None
    columns: list[dict]
    scope: str = "Namespaced"
    transition_rules: object = None  # () -> root-level CEL rules over self and oldSelf (status included)

    @property
    def file_name(self) -> str:
        return f"{self.singular}.yaml"


def _kinds() -> tuple[Kind, ...]:
    from .spec_changes import change_rules
    from .policy import POLICY_KIND, POLICY_PLURAL, POLICY_SHORT_NAMES, POLICY_SINGULAR, PolicySpec
    from .sweep import SWEEP_KIND, SWEEP_PLURAL, SWEEP_SHORT_NAMES, SWEEP_SINGULAR, FineTuneSweepSpec, FineTuneSweepStatus

    return (
        Kind(KIND, PLURAL, SINGULAR, SHORT_NAMES,
             "A fine-tuning job: base model + dataset + method, trained, checkpointed, reported and optionally served.",
             FineTuneJobSpec, FineTuneJobStatus, PRINTER_COLUMNS, transition_rules=change_rules),
        Kind(SWEEP_KIND, SWEEP_PLURAL, SWEEP_SINGULAR, SWEEP_SHORT_NAMES,
             "A hyper-parameter sweep: FineTuneJobs from one template, their parameters chosen by Optuna, the best one named.",
             FineTuneSweepSpec, FineTuneSweepStatus, SWEEP_PRINTER_COLUMNS),
        Kind(POLICY_KIND, POLICY_PLURAL, POLICY_SINGULAR, POLICY_SHORT_NAMES,
             "The admin policy: what FineTuneJobs may reference beyond their namespace (Secrets by label, S3 endpoints, "
             "tracking hosts, storage prefixes, placement, remote code). The params of kubetune's ValidatingAdmissionPolicy.",
             PolicySpec, None, POLICY_PRINTER_COLUMNS, scope="Cluster"),
    )


def build_crds() -> list[dict]:
    """Every CRD, as written to crds/<singular>.yaml."""
    return [build_crd(kind) for kind in _kinds()]


def build_crd(kind: Kind | None = None) -> dict:
    """The complete CRD of one kind (default: FineTuneJob)."""
    kind = kind or _kinds()[0]
    properties = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": model_schema(kind.spec),
    }
    if kind.status is not None:
        properties["status"] = model_schema(kind.status)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "annotations": {"kubetune.io/generated-by": "kubetune crd (from kubetune_operator.api)"},
        },
        "spec": {
            "group": GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["kubetune", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if kind.status is not None else {}),
                    "additionalPrinterColumns": kind.columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": properties,
                            **({"x-kubernetes-validations": kind.transition_rules()} if kind.transition_rules else {}),
                        }
                    },
                }
            ],
        },
    }
