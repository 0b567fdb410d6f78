"""Small helpers shared by the operator's cluster tests."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tests.harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
FTJ = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunejobs"
TRAINER_SELECTOR = "app.kubernetes.io/name=kubetune-trainer,app.kubernetes.io/managed-by=kubetune"


def manifest(name: str, spec: dict | None = None, base: str = "quickstart.yaml") -> dict:
    doc = yaml.safe_load((REPO / "examples" / base).read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name}
    for key, value in (spec or {}).items():
        doc["spec"][key] = value
    return doc


def quickstart(bucket, name: str, **spec) -> dict:
    """The quickstart example on the tiny model and dataset in `bucket`
    (see the bucket_with_assets fixture)."""
    doc = manifest(name)
    doc["spec"]["model"] = {"uri": bucket.uri("models/tiny-llama")}
    doc["spec"]["dataset"]["trainUri"] = bucket.uri("data/train.jsonl")
    for key, value in spec.items():
        doc["spec"][key] = value
    return doc


def create(kube, ns: str, doc: dict) -> dict:
    return kube.raw.request("POST", FTJ.format(ns=ns), doc)


def get(kube, ns: str, name: str) -> dict:
    return kube.raw.get(f"{FTJ.format(ns=ns)}/{name}")


def status(kube, ns: str, name: str) -> dict:
    return get(kube, ns, name).get("status") or {}


def condition(st: dict, type_: str) -> dict:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def wait_phase(kube, ns: str, name: str, *phases: str, timeout: float = 120, operator=None) -> dict:
    def describe() -> str:
        text = json.dumps(status(kube, ns, name), indent=1)
        if operator is not None:
            text += "\n" + operator.log_tail(30)
        return text

    return wait_for(lambda: (s := status(kube, ns, name)).get("phase") in phases and s, timeout=timeout,
                    interval=0.3, what=f"{name} phase in {phases}", describe=describe)


def jobs(kube, ns: str) -> list[dict]:
    return kube.raw.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]


def pods(kube, ns: str) -> list[dict]:
    return kube.raw.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=TRAINER_SELECTOR)["items"]


def events(kube, ns: str, name: str) -> list[dict]:
    items = kube.raw.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [e for e in items if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "FineTuneJob"]


def events_with(kube, ns: str, name: str, *reasons: str, timeout: float = 30) -> list[dict]:
    """The job's Events once every one of ``reasons`` is among them.

    The operator posts an Event after the status write that caused it, off the reconciling pass, so a
    test that has just seen a phase or condition waits for its Event instead of reading the list once."""
    def seen() -> list[dict] | None:
        found = events(kube, ns, name)
        return found if set(reasons) <= {e["reason"] for e in found} else None
    return wait_for(seen, timeout=timeout, what=f"{name}'s Events {sorted(reasons)}",
                    describe=lambda: str(sorted({e["reason"] for e in events(kube, ns, name)})))
