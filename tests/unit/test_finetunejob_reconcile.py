"""The FineTuneJob controller's first pass over a job, on the runtime with a
recording stand-in for the Kubernetes client (the cluster tests run it against
the real API server): what it creates when nothing exists, when a process
before it created the training Job but was killed before its ConfigMap, and
in which order a trained job's serving objects are made, and how they go when
the job is no longer to be served."""
from __future__ import annotations

import pytest

from kubetune_operator.builders.meta import LABEL_JOB, config_map_name, serving_name, training_job_name
from kubetune_operator.controllers.finetunejob.controller import FineTuneJobController
from kubetune_operator.controllers.watches import FINETUNEJOBS, TRAINING_JOBS
from kubetune_operator.k8s import ApiError
from kubetune_operator.runtime import PermanentError, Runtime
from kubetune_operator.runtime.watches import slim

from .test_builders import CFG, UID, example

KEY = ("team", "quickstart")


class RecordingApiServer:
    """Holds objects by (kind, name) and records what a pass creates and patches."""

    def __init__(self, *held: tuple[str, str], foreign: tuple[tuple[str, str], ...] = (), stored: dict | None = None):
        self.stored = stored or {}  # (kind, name) -> the held object as the API server returns it
        self.held = set(held) | set(foreign) | set(self.stored)
        self.foreign = set(foreign)  # held, made by someone else: no ownerReference to the FineTuneJob
        self.created: list[tuple[str, str]] = []
        self.patched: list[tuple[str, str, dict]] = []
        self.deleted: list[tuple[str, str]] = []
        self.owner_uid: str | None = None  # the ownerReferences uid of what it holds

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
            theirs = {"kind": obj["kind"], "metadata": {"name": obj["metadata"]["name"]}, "spec": {}}
            results.append((theirs if ident in self.foreign else self.stored.get(ident, obj), new))
        return results

    def create_if_absent(self, obj):
        return self.create_all_if_absent([obj])[0]

    def get(self, kind, namespace, name):
        if (kind, name) not in self.held:
            return None
        return {"metadata": {"name": name, "uid": f"{kind}-uid", "ownerReferences": [{"uid": self.owner_uid}]}}

    def delete(self, kind, namespace, name, uid) -> bool:
        assert uid == f"{kind}-uid"  # only the object it read, never a namesake
        self.held.discard((kind, name))
        self.deleted.append((kind, name))
        return True

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


def stored_job(name: str, owner: str = UID) -> dict:
    """A training Job as the cache keeps it, controlled by the FineTuneJob `owner`."""
    return slim({"metadata": {"name": name, "uid": "job-uid", "ownerReferences": [{"uid": owner, "kind": "FineTuneJob", "controller": True}]},
                 "spec": {"suspend": False}, "status": {"active": 1}})


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


def test_a_config_map_of_our_name_someone_else_made_is_never_run():
    """Pre-created `<job>-config`: the trainer would run it with the job's
    Secrets. The Job created beside it is suspended at once (and its trainer
    refuses a config without this job's UID), the ConfigMap is not touched,
    the conflict is in status."""
    server = RecordingApiServer(foreign=(("ConfigMap", config_map_name(KEY[1])),))
    statuses = []
    server.patch_status = lambda kind, ns, name, status: statuses.append(status) or {}
    first_pass(server, quickstart_job())
    assert server.created == [("Job", training_job_name(KEY[1]))]
    assert server.patched == [("Job", training_job_name(KEY[1]), {"spec": {"suspend": True}})]
    valid = next(c for c in statuses[-1]["conditions"] if c["type"] == "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "ChildConflict") and "ConfigMap quickstart-config exists and is not" in valid["message"]


def test_a_queued_job_s_foreign_config_map_leaves_no_job_for_kueue_to_start():
    """A queued Job is created suspended and Kueue un-suspends it on admission,
    whatever the operator suspended: so a queued job's ConfigMap is created
    (and found ours) first, and a foreign one leaves no Job at all."""
    body = quickstart_job()
    body["spec"]["queueName"] = "team-queue"
    server = RecordingApiServer(foreign=(("ConfigMap", config_map_name(KEY[1])),))
    first_pass(server, body)
    assert server.created == [] and server.patched == []
    server = RecordingApiServer()
    first_pass(server, body)
    assert server.created == [("ConfigMap", config_map_name(KEY[1])), ("Job", training_job_name(KEY[1]))]


def test_an_earlier_incarnation_s_job_is_not_adopted():
    """Re-created before garbage collection removed the old, Complete Job: that
    Job is another FineTuneJob's (its UID): not ours, not adopted, its pods not read."""
    from kubetune_operator.controllers.finetunejob.observe import children
    from kubetune_operator.controllers.watches import TRAINER_PODS

    job_name = training_job_name(KEY[1])
    server = RecordingApiServer(foreign=(("Job", job_name),))
    rt = Runtime.create(CFG, server, (FineTuneJobController,), workers=0)
    rt.index(FINETUNEJOBS, *KEY, {}, quickstart_job())
    rt.index(TRAINING_JOBS, KEY[0], job_name, {LABEL_JOB: KEY[1]}, stored_job(job_name, owner="an-older-uid"))
    forged = slim({"metadata": {"name": "forged", "labels": {LABEL_JOB: KEY[1]}}, "status": {"phase": "Succeeded"}})
    rt.index(TRAINER_PODS, KEY[0], "forged", {LABEL_JOB: KEY[1]}, forged)
    assert children(rt.cache, KEY, UID) == (None, [], None)
    rt.controllers["finetunejob"].work(KEY)
    assert [kind for kind, _ in server.created] == ["ConfigMap"] and server.patched == []  # our config; their Job untouched


def served_job(enabled: bool) -> dict:
    body = example("serving.yaml", namespace=KEY[0]).to_manifest()
    body["metadata"].update(name=KEY[1], generation=2, uid="job-uid")
    body["spec"]["serving"]["enabled"] = enabled
    body["status"] = {"phase": "Serving", "output": {"adapterUri": "s3://out/quickstart/adapter"}, "observedGeneration": 1,
                      "serving": {"endpoint": "http://quickstart-serving.team.svc:8000/v1", "modelName": KEY[1], "ready": True},
                      "conditions": [{"type": "Valid", "status": "True", "reason": "Accepted"},
                                     {"type": "Serving", "status": "True", "reason": "ServingReady"}]}
    return body


def test_serving_turned_off_removes_the_deployment_then_the_service_in_one_pass():
    name = serving_name(KEY[1])
    server = RecordingApiServer(("Deployment", name), ("Service", name), ("Job", training_job_name(KEY[1])))
    server.owner_uid = "job-uid"
    first_pass(server, served_job(enabled=False), passes=1)
    assert server.deleted == [("Deployment", name), ("Service", name)]
    assert server.created == []


def test_serving_turned_off_leaves_what_is_not_the_job_s_own():
    """A Deployment and Service of that name owned by another uid (a namesake) stay."""
    name = serving_name(KEY[1])
    server = RecordingApiServer(("Deployment", name), ("Service", name))
    server.owner_uid = "someone-else"
    first_pass(server, served_job(enabled=False), passes=1)
    assert server.deleted == []


def test_a_served_job_still_to_be_served_keeps_its_objects():
    name = serving_name(KEY[1])
    server = RecordingApiServer(("Deployment", name), ("Service", name))
    server.owner_uid = "job-uid"
    first_pass(server, served_job(enabled=True), passes=1)
    assert server.deleted == [] and server.created == []


def test_a_served_job_s_changed_serving_mode_rolls_its_deployment_once():
    """serving.mode adapter -> merged on a served job (docs/operator.md: serving
    may always change): its Deployment, found in the cache with the digest it was
    built from, gets the merged model's template in one patch; a pass that finds
    the digest current patches nothing."""
    from kubetune_operator.controllers.finetunejob.serving import DIGEST_ANNOTATION
    from kubetune_operator.controllers.watches import SERVING_DEPLOYMENTS

    name = serving_name(KEY[1])
    body = served_job(enabled=True)
    body["status"]["output"]["mergedUri"] = "s3://out/quickstart/merged"
    built: list[dict] = []
    server = RecordingApiServer()
    create = server.create_all_if_absent
    server.create_all_if_absent = lambda objects: built.extend(objects) or create(objects)

    def serve(job: dict, deployment: dict | None) -> RecordingApiServer:
        server.patched.clear()
        rt = Runtime.create(CFG, server, (FineTuneJobController,), workers=0)
        rt.index(FINETUNEJOBS, *KEY, {}, job)
        if deployment is not None:
            rt.index(SERVING_DEPLOYMENTS, KEY[0], name, {LABEL_JOB: KEY[1]}, slim(deployment))
        rt.controllers["finetunejob"].work(KEY)
        return server

    serve(body, None)
    (adapter_deployment,) = [o for o in built if o["kind"] == "Deployment"]
    assert "--enable-lora" in adapter_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert serve(body, adapter_deployment).patched == []  # built from this spec: left alone

    body["spec"]["serving"]["mode"] = "merged"
    body["metadata"]["generation"] = 3
    ((kind, patched_name, patch),) = serve(body, adapter_deployment).patched
    assert (kind, patched_name) == ("Deployment", name)
    args = patch["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-lora" not in args and args[args.index("--model") + 1] == "/models/merged"
    (fetch,) = patch["spec"]["template"]["spec"]["initContainers"]
    assert "s3://out/quickstart/merged" in fetch["command"] and "s3://out/quickstart/adapter" not in fetch["command"]
    digest = patch["metadata"]["annotations"][DIGEST_ANNOTATION]
    assert digest != adapter_deployment["metadata"]["annotations"][DIGEST_ANNOTATION]
    rolled = {**adapter_deployment, "metadata": {**adapter_deployment["metadata"], "annotations": {DIGEST_ANNOTATION: digest}}}
    assert serve(body, rolled).patched == []


def test_a_template_patch_removes_what_the_new_spec_leaves_out():
    """A JSON merge patch keeps a map's keys it does not name: a fetch container
    or GPU placement the old spec had is removed explicitly."""
    from kubetune_operator.builders.serving import template_patch

    deployment = {"metadata": {"name": "x", "annotations": {"a": "1"}},
                  "spec": {"replicas": 1, "strategy": {"type": "RollingUpdate"},
                           "template": {"metadata": {"labels": {"l": "v"}}, "spec": {"containers": [{"name": "vllm"}]}}}}
    pod = template_patch(deployment)["spec"]["template"]["spec"]
    assert pod == {"initContainers": None, "nodeSelector": None, "tolerations": None, "containers": [{"name": "vllm"}]}


def test_a_spec_changed_while_no_trainer_runs_is_rendered_again():
    """Suspended before its first checkpoint, the job's learning rate is edited
    (generation 2): the ConfigMap of generation 1 is rendered again, once."""
    import copy

    from kubetune_operator.builders.training import SPEC_GENERATION_ANNOTATION

    job_name, cm_name = training_job_name(KEY[1]), config_map_name(KEY[1])
    body = quickstart_job()
    body["metadata"]["generation"] = 2
    body["spec"]["training"]["learningRate"] = 0.0001
    old_cm = {"kind": "ConfigMap", "metadata": {"name": cm_name, "annotations": {SPEC_GENERATION_ANNOTATION: "1"},
                                                "ownerReferences": [{"uid": UID, "kind": "FineTuneJob", "controller": True}]},
              "data": {"config.json": "{}"}}
    server = RecordingApiServer(("Job", job_name), stored={("ConfigMap", cm_name): copy.deepcopy(old_cm)})
    first_pass(server, body, stored_job(job_name))
    (patched,) = [p for p in server.patched if p[0] == "ConfigMap"]
    assert patched[2]["metadata"]["annotations"] == {SPEC_GENERATION_ANNOTATION: "2"}
    assert '"learningRate": 0.0001' in patched[2]["data"]["config.json"]
    # Rendered from this generation already: left alone.
    current = dict(old_cm, metadata={**old_cm["metadata"], "annotations": {SPEC_GENERATION_ANNOTATION: "2"}}, data=patched[2]["data"])
    server = RecordingApiServer(("Job", job_name), stored={("ConfigMap", cm_name): current})
    first_pass(server, body, stored_job(job_name))
    assert [p for p in server.patched if p[0] == "ConfigMap"] == []


class RefusingApiServer(RecordingApiServer):
    """Answers one kind's create with the API server's 403 ``message``."""

    def __init__(self, kind: str, message: str):
        super().__init__()
        self.kind, self.message, self.statuses = kind, message, []

    def create_all_if_absent(self, objects):
        allowed = [o for o in objects if o["kind"] != self.kind]
        done = iter(super().create_all_if_absent(allowed))
        return [ApiError(403, "Forbidden", self.message) if o["kind"] == self.kind else next(done) for o in objects]

    def patch_status(self, kind, namespace, name, status):
        self.statuses.append(status)
        return {}


RBAC_403 = ('jobs.batch is forbidden: User "system:serviceaccount:kubetune:kt-kubetune" cannot create '
            'resource "jobs" in API group "batch" in the namespace "team"')


def test_a_verb_the_operator_s_role_lacks_is_said_in_status_and_retried():
    server = RefusingApiServer("Job", RBAC_403)
    rt = Runtime.create(CFG, server, (FineTuneJobController,), workers=0)
    rt.index(FINETUNEJOBS, *KEY, {}, quickstart_job())
    again = rt.controllers["finetunejob"].work(KEY)
    assert again is not None and again > 0  # looked at again: an admin fixes the Role
    status = server.statuses[-1]
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert status["phase"] == "Pending" and valid["reason"] == "PermissionDenied"
    assert 'cannot create resource "jobs"' in valid["message"] and "Role" in valid["message"]
    assert not any(c["type"] == "Failed" for c in status["conditions"])


def test_a_quota_s_403_is_not_taken_for_missing_rbac():
    server = RefusingApiServer("Job", 'jobs.batch "quickstart-train" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1')
    rt = Runtime.create(CFG, server, (FineTuneJobController,), workers=0)
    rt.index(FINETUNEJOBS, *KEY, {}, quickstart_job())
    with pytest.raises(PermanentError) as refused:
        rt.controllers["finetunejob"].work(KEY)
    assert refused.value.reason == "InvalidSpec" and "exceeded quota" in refused.value.message
