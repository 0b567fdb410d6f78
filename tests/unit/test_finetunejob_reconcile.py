"""The FineTuneJob controller's first pass over a job, on the runtime with a
recording stand-in for the Kubernetes client (the cluster tests run it against
the real API server): what it creates when nothing exists, when a process
before it created the training Job but was killed before its ConfigMap, and
in which order a trained job's serving objects are made."""
from __future__ import annotations

from kubetune_operator.builders.meta import LABEL_JOB, config_map_name, training_job_name
from kubetune_operator.controllers.finetunejob.controller import FineTuneJobController
from kubetune_operator.controllers.watches import FINETUNEJOBS, TRAINING_JOBS
from kubetune_operator.runtime import Runtime
from kubetune_operator.runtime.watches import slim

from .test_builders import CFG, example

KEY = ("team", "quickstart")


class RecordingApiServer:
    """Holds objects by (kind, name) and records what a pass creates and patches."""

    def __init__(self, *held: tuple[str, str]):
        self.held = set(held)
        self.created: list[tuple[str, str]] = []
        self.patched: list[tuple[str, str, dict]] = []

    def metadata(self, kind, namespace, name) -> dict:
        return {"name": name, "labels": {"kubetune.io/usable": "true"}}  # every Secret the job names is there, usable

    def create_all_if_absent(self, objects):
        results = []
        for obj in objects:
            ident = (obj["kind"], obj["metadata"]["name"])
            new = ident not in self.held
            if new:
                self.held.add(ident)
                self.created.append(ident)
            results.append((obj, new))
        return results

    def create_if_absent(self, obj):
        return self.create_all_if_absent([obj])[0]

    def merge_patch(self, kind, namespace, name, patch, subresource=None):
        self.patched.append((kind, name, patch))
        return {}

    def patch_status(self, kind, namespace, name, status):
        return {}

    def event(self, body, *event) -> None:
        pass


def first_pass(server: RecordingApiServer, job_body: dict, training_job: dict | None = None, passes: int = 1) -> None:
    rt = Runtime.create(CFG, server, (FineTuneJobController,), workers=0)
    rt.index(FINETUNEJOBS, *KEY, {}, job_body)
    if training_job is not None:
        rt.index(TRAINING_JOBS, KEY[0], training_job["metadata"]["name"], {LABEL_JOB: KEY[1]}, training_job)
    for _ in range(passes):
        rt.controllers["finetunejob"].work(KEY)


def quickstart_job() -> dict:
    doc = example("quickstart.yaml", namespace=KEY[0]).to_manifest()
    doc["metadata"].update(name=KEY[1], generation=1)
    return doc


def stored_job(name: str) -> dict:
    return slim({"metadata": {"name": name, "uid": "job-uid"}, "spec": {"suspend": False}, "status": {"active": 1}})


def test_a_new_job_gets_its_config_map_and_training_job():
    server = RecordingApiServer()
    first_pass(server, quickstart_job())
    assert sorted(kind for kind, _ in server.created) == ["ConfigMap", "Job"]


def test_a_job_whose_config_map_a_killed_process_never_created_gets_it_on_the_next_pass():
    job_name = training_job_name(KEY[1])
    server = RecordingApiServer(("Job", job_name))
    first_pass(server, quickstart_job(), stored_job(job_name))
    # The pods wait for their ConfigMap volume: it is created, the Job is not made again.
    assert [kind for kind, _ in server.created] == ["ConfigMap"]
    assert server.patched == []  # the Job runs as it should: nothing to converge


def test_a_job_with_everything_in_place_is_left_as_it_is():
    job_name = training_job_name(KEY[1])
    server = RecordingApiServer(("Job", job_name), ("ConfigMap", config_map_name(KEY[1])))
    first_pass(server, quickstart_job(), stored_job(job_name))
    assert server.created == [] and server.patched == []


def test_a_trained_job_whose_training_job_is_gone_is_not_trained_again():
    body = quickstart_job()
    body["status"] = {"phase": "Succeeded", "conditions": [{"type": "Valid", "status": "True", "reason": "Accepted"}]}
    server = RecordingApiServer()
    first_pass(server, body)
    assert server.created == []


def test_a_trained_job_s_service_is_created_before_its_deployment():
    """The next pass looks only for the Deployment: a process killed between the
    two creations must leave no Deployment without its Service."""
    body = example("serving.yaml", namespace=KEY[0]).to_manifest()
    body["metadata"].update(name=KEY[1], generation=1)
    body["status"] = {"phase": "Succeeded", "output": {"adapterUri": "s3://out/quickstart/adapter"},
                      "conditions": [{"type": "Valid", "status": "True", "reason": "Accepted"}]}
    server = RecordingApiServer()
    first_pass(server, body, passes=2)  # reconcile, then the status sync that serves it
    assert [kind for kind, _ in server.created] == ["Service", "Deployment"]
