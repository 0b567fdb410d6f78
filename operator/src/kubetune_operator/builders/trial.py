"""A sweep's trial: a FineTuneJob, its spec the template with the trial's values.

Pure, like every builder. What the study needs to rebuild itself (the trial's
values and the sampler's bookkeeping) is on the FineTuneJob from the moment it
exists, in the `kubetune.io/trial` annotation."""

from __future__ import annotations

import json

from ..api.job import API_VERSION, KIND
from ..api.sweep import FineTuneSweep
from ..api.sweep_objective import ask_for
from ..api.search_space import trial_spec
from .meta import LABEL_MANAGED_BY, LABEL_SWEEP, LABEL_TRIAL, MANAGED_BY, TRIAL_ANNOTATION, child_name, owner_references


def trial_name(sweep: str, number: int) -> str:
    return child_name(sweep, f"t{number:03d}")


def own_locations(spec: dict, name: str) -> dict:
    """A template that names its checkpoint or output location gives each trial
    its own prefix under it: trials sharing one would resume from each other's
    checkpoints and overwrite each other's outputs."""
    for section in ("checkpoint", "output"):
        uri = (spec.get(section) or {}).get("uri")
        if uri:
            spec[section]["uri"] = f"{uri.rstrip('/')}/{name}"
    return spec


def build_trial(sweep: FineTuneSweep, number: int, values: dict, system_attrs: dict) -> dict:
    name = trial_name(sweep.metadata.name, number)
    spec = own_locations(ask_for(trial_spec(sweep.spec, values), sweep.spec.optimize.metric), name)
    spec["suspend"] = sweep.spec.suspend
    meta = {
        "name": name,
        "namespace": sweep.metadata.namespace or "default",
        "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_SWEEP: sweep.metadata.name, LABEL_TRIAL: str(number)},
        "annotations": {TRIAL_ANNOTATION: json.dumps({"number": number, "values": values, "systemAttrs": system_attrs}, sort_keys=True)},
    }
    owners = owner_references(sweep)
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}


def trial_record(body: dict) -> dict | None:
    """What a trial FineTuneJob says of itself: {number, values, systemAttrs}, or None."""
    raw = ((body.get("metadata") or {}).get("annotations") or {}).get(TRIAL_ANNOTATION)
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("number"), int) else None
