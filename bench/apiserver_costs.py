"""The API server's CPU per request, one kind at a time, on a control plane of
its own with nothing else running (no node): what each request
of a burst costs the machine `make bench-operator` saturates.

    python bench/apiserver_costs.py [--requests 300]

Rows: a FineTuneJob create, a status merge patch (the operator's first
status write) and a later one (Running, progress), with the CRD as it is,
with the spec-change rules (`api.spec_changes`) as one root rule per field
(main before branch t27-cel), without its root transition rules, and without
any CEL rule (each variant a copy of the CRD under a group of its own); a
ConfigMap holding a trainer config; a suspended training Job as the operator
builds it (no pods), and the same Job without its pod template's annotations.
CPU is the API server process's user + system time over the requests (4 at a
time), after 20 of each to warm it up.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import mkdtemp

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.burst_profile import cpu_seconds  # noqa: E402
from bench.operator_bench import OPERATOR_SETTINGS, job_doc  # noqa: E402
from tests.harness import cluster as cluster_mod  # noqa: E402
from tests.harness.fixtures import make_kube_clients  # noqa: E402

NAMESPACE = "costs"
FIRST_STATUS = {"status": {"phase": "Pending", "observedGeneration": 1, "conditions": [
    {"type": "Valid", "status": "True", "reason": "Accepted", "message": "spec accepted",
     "lastTransitionTime": "2026-12-05T18:00:00Z", "observedGeneration": 1}]}}
LATER_STATUS = {"status": {"phase": "Running", "progress": {"step": 1, "totalSteps": 10, "summary": "1/10 (10%)"}}}


def _without_rules(node, everywhere: bool) -> None:
    if isinstance(node, dict):
        node.pop("x-kubernetes-validations", None)
        for child in node.values() if everywhere else ():
            _without_rules(child, everywhere)
    elif isinstance(node, list) and everywhere:
        for child in node:
            _without_rules(child, everywhere)


def crd_variants() -> dict[str, dict]:
    """name -> the FineTuneJob CRD under a group of its own."""
    crd = yaml.safe_load((REPO / "crds/finetunejob.yaml").read_text())
    out = {}
    for name, group, strip in (("as is", "kubetune.io", None), ("one rule per field", "perfield.kubetune.io", None),
                               ("no root rules", "noroot.kubetune.io", False), ("no CEL", "nocel.kubetune.io", True)):
        variant = copy.deepcopy(crd)
        variant["spec"]["group"], variant["metadata"]["name"] = group, f"finetunejobs.{group}"
        for version in variant["spec"]["versions"]:
            if strip is not None:
                _without_rules(version["schema"]["openAPIV3Schema"], everywhere=strip)
            elif group.startswith("perfield."):
                version["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = _one_rule_per_field()
        out[name] = variant
    return out


def _one_rule_per_field() -> list[dict]:
    """The spec-change rules as main had them before branch t27-cel: each field's
    condition a root rule of its own, each evaluated on every write."""
    from kubetune_operator.api.spec_changes import field_conditions

    return [{"rule": condition, "fieldPath": f".spec.{path}", "message": message}
            for path, condition, message in field_conditions()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300)
    n = ap.parse_args().requests
    run_dir = Path(mkdtemp(prefix="kt-costs-"))
    c = cluster_mod.start(run_dir=run_dir, start_node=False)
    try:
        kube = make_kube_clients(c)
        raw, apiserver = kube.raw, c.pids["kube-apiserver"]

        def measure(label: str, request) -> None:
            for i in range(20):
                request(f"w{i:02d}")  # a status patch finds what the create warmed up with
            before, started = cpu_seconds(apiserver), time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(request, [f"m{i:04d}" for i in range(n)]))
            cpu = cpu_seconds(apiserver) - before
            print(f"{label:<48} {cpu * 1000 / n:6.2f} ms  ({n} in {time.monotonic() - started:.1f} s)", flush=True)

        print(f"API server CPU per request ({n} of each, 4 at a time)")
        for name, crd in crd_variants().items():
            path = run_dir / f"{crd['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(crd))
            kube.kubectl("apply", "--server-side", "-f", str(path))
            kube.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
        raw.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for name, crd in crd_variants().items():
            group = crd["spec"]["group"]
            collection = f"/apis/{group}/v1alpha1/namespaces/{NAMESPACE}/finetunejobs"

            def create(obj_name: str, group=group, collection=collection) -> None:
                raw.request("POST", collection, dict(job_doc(obj_name), apiVersion=f"{group}/v1alpha1"))

            def first_status(obj_name: str, collection=collection) -> None:
                raw.request("PATCH", f"{collection}/{obj_name}/status", FIRST_STATUS, content_type="application/merge-patch+json")
            measure(f"POST finetunejobs (CRD {name})", create)
            def later_status(obj_name: str, collection=collection) -> None:
                raw.request("PATCH", f"{collection}/{obj_name}/status", LATER_STATUS, content_type="application/merge-patch+json")
            measure(f"PATCH finetunejobs/status (CRD {name})", first_status)
            measure(f"PATCH finetunejobs/status, a later one (CRD {name})", later_status)
        _children(raw, measure)
    finally:
        cluster_mod.stop(c)
    return 0


def _children(raw, measure) -> None:
    from kubetune_operator.api import parse_job
    from kubetune_operator.builders.training import build_training_job, trainer_config
    from kubetune_operator.settings import load_settings

    stored = raw.get(f"/apis/kubetune.io/v1alpha1/namespaces/{NAMESPACE}/finetunejobs/m0000")
    job = parse_job({k: stored[k] for k in ("apiVersion", "kind", "metadata", "spec")}).job
    cfg = load_settings(OPERATOR_SETTINGS)
    text = json.dumps(trainer_config(job, cfg), indent=2, sort_keys=True)
    measure(f"POST configmaps (a trainer config, {len(text)} B)", lambda name: raw.request(
        "POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"config.json": text}}))
    built = build_training_job(job, cfg)
    built["spec"]["suspend"] = True
    built["metadata"].pop("ownerReferences", None)

    def create_job(name: str, template_annotations: bool) -> None:
        obj = copy.deepcopy(built)
        obj["metadata"]["name"] = name
        if not template_annotations:
            obj["spec"]["template"]["metadata"].pop("annotations", None)
        raw.request("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", obj)
    annotations = built["spec"]["template"]["metadata"].get("annotations") or {}
    measure(f"POST jobs (suspended, template annotations {sum(len(v) for v in annotations.values())} B)",
            lambda name: create_job(name, True))
    measure("POST jobs (suspended, no template annotations)", lambda name: create_job("b" + name, False))


if __name__ == "__main__":
    sys.exit(main())
