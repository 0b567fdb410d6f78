"""A hostile tenant on the real control plane: one test per attack an author
of FineTuneJobs in their own namespace could make (issue 26), each showing it
fails. The operator runs as a process, with the admin policy the chart would
give it; trainer pods run `hostile_standin.py` in the trainer image on the
real node (its source as the container's `python -c`), a STAND-IN for the
trainer (training is not what these tests are about), doing what a hostile pod
would; an HTTP sink on this machine, where pods can reach it, records whether
anything reached it. A Secret's
value must appear in no status, Event, ConfigMap, operator log or sink.

The API server's own part of the policy (the ValidatingAdmissionPolicy) is in
test_admin_policy.py; here the operator's checks stand alone, as they do where
the admission policy is not installed.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.harness.waiting import wait_for

from .operator_helpers import FTJ, condition, create, get, jobs, pods, status, wait_phase

pytestmark = pytest.mark.cluster

# The image has no copy of this checkout's tests: the stand-in goes as source.
STANDIN = Path(__file__).with_name("hostile_standin.py").read_text()
SWEEPS = "/apis/kubetune.io/v1alpha1/namespaces/{ns}/finetunesweeps"
SECRET_VALUE = "kt-db-password-" + uuid.uuid4().hex[:8]
S3_SECRET = "kubetune-s3"
USABLE = {"kubetune.io/usable": "true"}


# --------------------------------------------------------------------------- the sink, the operator, the jobs


class Sink:
    """An HTTP server on this machine (on the host end of the node's link, as
    reachable from pods as any host service) that records every request it gets."""

    def __init__(self, host: str):
        requests = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "body": self.rfile.read(length).decode("utf-8", "replace") if length else ""})
                self.send_response(403)
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = _record

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        return json.dumps(self.requests)


@pytest.fixture
def sink(control_plane):
    s = Sink(control_plane.network.host_ip)
    yield s
    s.server.shutdown()


def secret(kube, namespace: str, name: str, data: dict, labels: dict | None = None) -> None:
    kube.raw.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels or {}}, "stringData": data})


@pytest.fixture
def tenant(kube, namespace, s3_bucket, operator_factory, sink):
    """start(**settings): the operator with the chart's default policy for the
    test's bucket (its namespace's prefix, its endpoint, labelled Secrets; the
    models prefix shared read-only) and the stand-in trainer; the namespace's
    labelled S3 Secret, and an unlabelled one holding a database password."""
    secret(kube, namespace, S3_SECRET, {"AWS_ACCESS_KEY_ID": s3_bucket.access_key, "AWS_SECRET_ACCESS_KEY": s3_bucket.secret_key}, USABLE)
    secret(kube, namespace, "db-creds", {"password": SECRET_VALUE})
    policy = {"storageRoots": [f"s3://{s3_bucket.name}/{{namespace}}/"], "readOnlyRoots": [f"s3://{s3_bucket.name}/models/"],
              "allowedS3Endpoints": [s3_bucket.endpoint]}

    def start(**settings):
        return operator_factory(**{
            "KUBETUNE_TRAINER_COMMAND": json.dumps(["python", "-c", STANDIN]),
            "KUBETUNE_DEFAULT_BUCKET_URI": f"s3://{s3_bucket.name}", "KUBETUNE_DEFAULT_S3_SECRET": S3_SECRET,
            "KUBETUNE_DEFAULT_S3_ENDPOINT": s3_bucket.endpoint, "KUBETUNE_DEFAULT_S3_REGION": "us-east-1",
            "KUBETUNE_POLICY": json.dumps(policy), "KUBETUNE_EXTRA_TRAINER_ENV": f"KUBETUNE_SINK_URL={sink.url}",
            **settings})
    return start


def job(bucket, name: str, **spec) -> dict:
    """A small LoRA job reading the shared models prefix; its fields as a tenant would set them."""
    body = {"model": {"uri": f"s3://{bucket.name}/models/tiny"}, "dataset": {"trainUri": f"s3://{bucket.name}/models/train.jsonl"},
            "method": "lora", "training": {"maxSteps": 1}, "resources": {"gpusPerNode": 0}, **spec}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def refused(kube, namespace: str, name: str, reason: str, op, phases=("Failed", "Pending")) -> dict:
    """The job's Valid=False with `reason` (and nothing created for it)."""
    st = wait_for(lambda: (s := status(kube, namespace, name)) and condition(s, "Valid").get("reason") == reason and s,
                  timeout=60, what=f"{name} refused with {reason}",
                  describe=lambda: json.dumps(status(kube, namespace, name)) + "\n" + op.log_tail(20))
    assert st["phase"] in phases, st
    assert [j for j in jobs(kube, namespace) if j["metadata"]["name"].startswith(name)] == []
    return st


def assert_secret_nowhere(kube, namespace: str, op, sink: Sink) -> None:
    """The Secret's value in no status, Event, ConfigMap, operator log, nor the sink."""
    statuses = json.dumps([i.get("status") for i in kube.raw.get(FTJ.format(ns=namespace))["items"]])
    everything = {
        "status": statuses,
        "events": json.dumps(kube.raw.get(f"/api/v1/namespaces/{namespace}/events")["items"]),
        "configmaps": json.dumps(kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps")["items"]),
        "operator log": op.log(), "sink": sink.text(),
    }
    assert [where for where, text in everything.items() if SECRET_VALUE in text] == []


# --------------------------------------------------------------------------- the attacks


def test_a_secret_cannot_reach_a_command_line_or_a_pod(kube, namespace, s3_bucket, tenant, sink):
    """credentials.hfToken naming the database password and serving.extraArgs
    expanding it: vLLM's error (a condition, an Event) would carry it."""
    op = tenant()
    leak = job(s3_bucket, "leak", credentials={"hfToken": {"name": "db-creds", "key": "password"}},
               serving={"enabled": True, "gpus": 0, "extraArgs": ["--max-model-len=$(HF_TOKEN)"]})
    with pytest.raises(Exception) as caught:
        create(kube, namespace, leak)
    assert "must not contain $(" in str(caught.value) and "spec.serving.extraArgs[0]" in str(caught.value)
    # Without the expansion: the Secret is not one the namespace's jobs may use.
    leak["spec"]["serving"]["extraArgs"] = ["--max-model-len=2048"]
    create(kube, namespace, leak)
    st = refused(kube, namespace, "leak", "SecretNotUsable", op, phases=("Pending",))
    assert "spec.credentials.hfToken.name: Secret db-creds is not labelled kubetune.io/usable=true" in condition(st, "Valid")["message"]
    assert kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps", labelSelector="kubetune.io/job=leak")["items"] == []
    assert_secret_nowhere(kube, namespace, op, sink)


def test_credentials_are_not_sent_to_a_foreign_endpoint(kube, namespace, s3_bucket, tenant, sink):
    """credentials.s3.endpoint and tracking.uri naming the sink: the job's
    trainer would send its S3 key (tracking token) there."""
    op = tenant()
    create(kube, namespace, job(s3_bucket, "s3-exfil", credentials={"s3": {"secretName": S3_SECRET, "endpoint": sink.url}}))
    create(kube, namespace, job(s3_bucket, "track-exfil", tracking={"backend": "mlflow", "uri": sink.url}))
    # Decided: refused, or (where nothing refuses it) its trainer has run.
    st = wait_for(lambda: (s := status(kube, namespace, "s3-exfil")) and (condition(s, "Valid").get("reason") == "PolicyDenied"
                                                                          or s.get("phase") in ("Succeeded", "Failed")) and s,
                  timeout=60, what="s3-exfil decided", describe=lambda: json.dumps(status(kube, namespace, "s3-exfil")) + op.log_tail(20))
    assert s3_bucket.access_key not in sink.text() and sink.requests == [], sink.requests
    assert condition(st, "Valid")["reason"] == "PolicyDenied", st
    assert f"spec.credentials.s3.endpoint: {sink.url} is not allowed by the admin policy (KubetunePolicy allowedS3Endpoints" \
           in condition(st, "Valid")["message"]
    st = refused(kube, namespace, "track-exfil", "PolicyDenied", op)
    assert f"spec.tracking.uri: {sink.url} is not allowed by the admin policy (KubetunePolicy allowedTrackingHosts" \
           in condition(st, "Valid")["message"]
    # Nothing was created that could have sent them: the sink has nothing.
    assert pods(kube, namespace) == [] and sink.requests == []


def test_another_namespace_s_prefix_is_refused(kube, namespace, s3_bucket, tenant, sink):
    """With one bucket-wide key: resume from the victim's checkpoints and delete
    them with keepLast 1, or overwrite the adapter it serves."""
    op = tenant()
    victim = f"s3://{s3_bucket.name}/victim-team/served"
    create(kube, namespace, job(s3_bucket, "steal", checkpoint={"uri": f"{victim}/checkpoints", "keepLast": 1},
                                output={"uri": f"{victim}/output"}))
    message = condition(refused(kube, namespace, "steal", "PolicyDenied", op), "Valid")["message"]
    assert f"spec.checkpoint.uri: {victim}/checkpoints is not allowed" in message and f"spec.output.uri: {victim}/output" in message
    assert f"s3://{s3_bucket.name}/{namespace}/" in message  # the policy's root for this namespace, named


def test_a_recreated_job_does_not_adopt_its_predecessor_s_job(kube, namespace, s3_bucket, tenant):
    """Re-created while the old, Complete Job is still there (garbage
    collection behind, here: orphaned): the new job must not succeed on it."""
    op = tenant()
    create(kube, namespace, job(s3_bucket, "again"))
    first = wait_phase(kube, namespace, "again", "Succeeded", "Failed", operator=op)
    assert first["phase"] == "Succeeded", first
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/again", {"propagationPolicy": "Orphan"})
    wait_for(lambda: not kube.raw.get(FTJ.format(ns=namespace))["items"], timeout=30, what="the first 'again' gone")
    create(kube, namespace, job(s3_bucket, "again"))
    st = wait_for(lambda: (s := status(kube, namespace, "again")) and (condition(s, "Valid").get("reason") == "ChildConflict"
                                                                       or s.get("phase") == "Succeeded") and s,
                  timeout=60, what="the second 'again' decided", describe=lambda: json.dumps(status(kube, namespace, "again")) + op.log_tail(20))
    assert st["phase"] == "Pending" and condition(st, "Valid")["reason"] == "ChildConflict", st
    assert "exists and is not this FineTuneJob's" in condition(st, "Valid")["message"]
    assert [j["metadata"].get("ownerReferences") for j in jobs(kube, namespace)] == [None]  # the old one, untouched


def test_a_reapplied_sweep_s_trials_are_new_runs(kube, namespace, s3_bucket, tenant):
    """A re-applied sweep's t000 must not continue the previous sweep's t000
    (same name, same checkpoint URI, other parameters): its trainer is given
    its own UID, under which its checkpoints live (run-<uid>; the trainer tests
    show a run never resumes another's)."""
    op = tenant()
    sweep = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "tune"},
             "spec": {"template": {**job(s3_bucket, "t")["spec"], "dataset": {"trainUri": f"s3://{s3_bucket.name}/models/train.jsonl",
                                                                                "evalSplit": 0.1}},
                      "parameters": [{"path": "training.learningRate", "values": [1e-4, 3e-4]}], "maxTrials": 1}}

    def trial_config() -> dict:
        cm = wait_for(lambda: kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps", labelSelector="kubetune.io/job=tune-t000")["items"],
                      timeout=60, what="t000's trainer config", describe=op.log_tail)
        trial = get(kube, namespace, "tune-t000")
        return trial["metadata"]["uid"], json.loads(cm[0]["data"]["config.json"])

    kube.raw.request("POST", SWEEPS.format(ns=namespace), sweep)
    first_uid, first = trial_config()
    kube.raw.request("DELETE", f"{SWEEPS.format(ns=namespace)}/tune", {"propagationPolicy": "Foreground"})
    wait_for(lambda: not kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps", labelSelector="kubetune.io/job=tune-t000")["items"]
             and not kube.raw.get(SWEEPS.format(ns=namespace))["items"], timeout=90, what="the first sweep and its trials gone")
    kube.raw.request("POST", SWEEPS.format(ns=namespace), sweep)
    second_uid, second = trial_config()
    assert first["checkpoint"]["uri"] == second["checkpoint"]["uri"]  # one location...
    assert (first["job"].get("uid"), second["job"].get("uid")) == (first_uid, second_uid) and first_uid != second_uid  # ...two runs


def test_trickling_metrics_pods_do_not_stall_a_normal_job(kube, namespace, s3_bucket, tenant):
    """Pods that answer /metrics one byte every 1.5 s, beside a normal job, with
    two workers: the normal job still reaches Running (here: finishes) within 30 s."""
    op = tenant(KUBETUNE_MAX_WORKERS="2", KUBETUNE_METRICS_SCRAPE_INTERVAL="1")
    for i in range(4):
        create(kube, namespace, job(s3_bucket, f"trickle-{i}"))
    wait_for(lambda: len([p for p in pods(kube, namespace) if (p.get("status") or {}).get("phase") == "Running"]) >= 4,
             timeout=90, what="four trickling trainer pods running", describe=op.log_tail)
    # Running, their scrapes are due every second: two such jobs are enough to hold both workers if scrapes ran on them.
    wait_for(lambda: sum(status(kube, namespace, f"trickle-{i}").get("phase") == "Running" for i in range(4)) >= 2, timeout=60,
             what="the trickling jobs Running", describe=op.log_tail)
    create(kube, namespace, job(s3_bucket, "normal"))
    st = wait_phase(kube, namespace, "normal", "Running", "Succeeded", timeout=30, operator=op)
    assert st["phase"] in ("Running", "Succeeded")


def test_a_redirecting_metrics_endpoint_sends_the_operator_nowhere(kube, namespace, s3_bucket, tenant, sink):
    op = tenant()
    create(kube, namespace, job(s3_bucket, "redirect-x"))
    wait_phase(kube, namespace, "redirect-x", "Running", operator=op)

    def failed_scrapes() -> float:
        for line in op.metrics().splitlines():
            if line.startswith("kubetune_operator_trainer_scrape_failures_total "):
                return float(line.split()[1])
        return 0.0
    # A scrape of it has ended (as a failure), or the operator went where it was sent.
    wait_for(lambda: failed_scrapes() >= 1 or sink.requests, timeout=30, what="a scrape of the redirecting pod", describe=op.log_tail)
    assert sink.requests == [], sink.requests


def test_objects_of_our_names_made_by_someone_else_are_never_used(kube, namespace, s3_bucket, tenant, trainer_image):
    """A ConfigMap `<victim>-config` made beforehand (the victim's trainer would
    run it with the victim's Secrets), a forged trainer pod, an unrelated
    Service named like a serving pool's."""
    op = tenant()
    core = f"/api/v1/namespaces/{namespace}"
    kube.raw.request("POST", f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim-config"},
                                                    "data": {"config.json": '{"evil": true}'}})
    forged_report = json.dumps({"reason": "Completed", "message": "forged", "output": {"adapterUri": "s3://evil/adapter"}})
    kube.raw.request("POST", f"{core}/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "forged", "labels": {"app.kubernetes.io/name": "kubetune-trainer", "app.kubernetes.io/managed-by": "kubetune",
                                                  "kubetune.io/job": "forgee"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": trainer_image,
                 "command": ["python", "-c", f"open('/dev/termination-log', 'w').write({forged_report!r})"]}]}})
    wait_for(lambda: (kube.raw.get(f"{core}/pods/forged").get("status") or {}).get("phase") == "Succeeded", timeout=60,
             what="the forged pod done")
    kube.raw.request("POST", f"{core}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-pool"},
                                                  "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}})
    create(kube, namespace, job(s3_bucket, "victim"))
    create(kube, namespace, job(s3_bucket, "forgee"))
    create(kube, namespace, job(s3_bucket, "member", serving={"enabled": True, "gpus": 0, "pool": "web"}))

    st = wait_for(lambda: (s := status(kube, namespace, "victim")) and condition(s, "Valid").get("reason") and s, timeout=60,
                  what="victim decided", describe=op.log_tail)
    assert (st["phase"], condition(st, "Valid")["reason"]) == ("Pending", "ChildConflict"), st
    assert "ConfigMap victim-config exists and is not this FineTuneJob's" in condition(st, "Valid")["message"]
    # The Job made beside it is suspended (the real trainer also refuses a config without this job's UID).
    assert [j["spec"].get("suspend") for j in jobs(kube, namespace) if j["metadata"]["name"] == "victim-train"] == [True]
    configmap = kube.raw.get(f"{core}/configmaps/victim-config")
    assert configmap["data"] == {"config.json": '{"evil": true}'} and not configmap["metadata"].get("ownerReferences")

    st = wait_phase(kube, namespace, "forgee", "Succeeded", "Failed", operator=op)
    assert st["attempts"] == 1 and st["output"]["adapterUri"] == f"s3://stand-in/{namespace}/forgee/output/adapter", st

    # Trained, the member is to be served by the pool, whose Service name is taken: it says so, and nothing is applied.
    serving = wait_for(lambda: (c := condition(status(kube, namespace, "member"), "Serving")) and "web-pool" in c.get("message", "") and c,
                       timeout=60, what="member's Serving condition naming web-pool",
                       describe=lambda: json.dumps(status(kube, namespace, "member")) + op.log_tail(20))
    assert serving["status"] == "False" and "Service web-pool exists and is not serving pool web's" in serving["message"], serving
    service = kube.raw.get(f"{core}/services/web-pool")
    assert service["spec"]["selector"] == {"app": "theirs"} and not service["metadata"].get("ownerReferences")


def test_a_malformed_termination_message_ends_the_job_as_its_exit_code_says(kube, namespace, s3_bucket, tenant):
    op = tenant()
    for name in ("badlist-a", "baddeep-a"):
        create(kube, namespace, job(s3_bucket, name))
    for name in ("badlist-a", "baddeep-a"):
        st = wait_phase(kube, namespace, name, "Succeeded", "Failed", operator=op)
        assert st["phase"] == "Succeeded" and condition(st, "ReportInvalid")["status"] == "True", st
        assert "is not a trainer report" in condition(st, "ReportInvalid")["message"] and "output" not in st
    # ...and the operator goes on with the next job.
    create(kube, namespace, job(s3_bucket, "after"))
    assert wait_phase(kube, namespace, "after", "Succeeded", "Failed", operator=op)["phase"] == "Succeeded"


def test_a_300_trial_sweep_s_status_fits_in_the_api_server(kube, namespace, kubetune_crds):
    """The operator's own trials table for 300 trials (16 parameters, 200
    evaluations each), written as the operator writes it: accepted, and far
    below etcd's 1.5 MB."""
    from kubetune_operator.api.sweep import SEARCHABLE
    from kubetune_operator.controllers.finetunesweep import progress
    from kubetune_operator.sweeps import study as st

    paths = sorted(SEARCHABLE)[:16]
    trials = [st.Trial(n, {p: 0.000123456789 * (n + 1) for p in paths}, state="complete", objective=0.5,
                       curve={s: 2.0 / s for s in range(10, 2010, 10)}) for n in range(300)]
    bodies = {n: {"metadata": {"name": f"a-long-sweep-name-t{n:03d}"}, "status": {"phase": "Succeeded"}} for n in range(300)}
    rows = progress.trial_rows(trials, bodies, {})
    sweep = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneSweep", "metadata": {"name": "wide"},
             "spec": {"template": job(SimpleNamespace(name="bucket-one"), "t")["spec"],
                      "parameters": [{"path": "training.learningRate", "values": [1e-4]}], "maxTrials": 300}}
    kube.raw.request("POST", SWEEPS.format(ns=namespace), sweep)
    kube.raw.request("PATCH", f"{SWEEPS.format(ns=namespace)}/wide/status", {"status": {"trials": rows}},
                     content_type="application/merge-patch+json")
    stored = kube.raw.get(f"{SWEEPS.format(ns=namespace)}/wide")
    assert len(stored["status"]["trials"]) == 300 and len(json.dumps(stored)) < 400_000


def test_a_job_deleted_while_the_operator_relisted_is_not_kept_as_a_ghost(kube, namespace, s3_bucket, tenant, tmp_path,
                                                                         operator_identity):
    """The operator's watches break, a job is deleted meanwhile, and the API
    server answers the resumed watch with 410 Gone (a compaction): the listing
    that follows has no DELETED event for it. Kept in the cache, a ghost is
    still counted, synced, a pool candidate. The gap and the 410 are made by
    `relist_proxy` (a stand-in), everything else is the real API server."""
    from .relist_proxy import RelistProxy

    proxy = RelistProxy(operator_identity.kubeconfig)
    try:
        op = tenant(KUBECONFIG=proxy.kubeconfig(tmp_path / "proxy.kubeconfig"), KUBETUNE_RESYNC_INTERVAL="2")
        for name in ("ghost", "alive"):
            create(kube, namespace, job(s3_bucket, name, suspend=True))
            wait_phase(kube, namespace, name, "Suspended", operator=op)

        def suspended() -> float:
            line = next((line for line in op.metrics().splitlines() if line.startswith('kubetune_operator_jobs{phase="Suspended"}')), "x 0")
            return float(line.split()[-1])
        wait_for(lambda: suspended() == 2, timeout=30, what="both jobs counted Suspended", describe=op.log_tail)
        proxy.partition()
        kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/ghost")
        wait_for(lambda: [i["metadata"]["name"] for i in kube.raw.get(FTJ.format(ns=namespace))["items"]] == ["alive"], timeout=30,
                 what="ghost deleted")
        proxy.compact(int(kube.raw.get(FTJ.format(ns=namespace))["metadata"]["resourceVersion"]))
        wait_for(lambda: any(p.endswith("/finetunejobs") for p in proxy.lists_after_compaction), timeout=30,
                 what="the operator listing FineTuneJobs again", describe=op.log_tail)
        wait_for(lambda: suspended() == 1, timeout=30, what="the deleted job no longer counted (Suspended == 1)",
                 describe=lambda: f"Suspended = {suspended()}\n{op.log_tail(20)}")
        # The resync logs what it dropped after handing every ghost to the controllers: wait for the line, not after the count.
        wait_for(lambda: f"finetunejobs {namespace}/ghost" in op.log(), timeout=30, what="the resync's line naming the ghost",
                 describe=lambda: op.log_tail(20))
        assert f"finetunejobs {namespace}/alive" not in op.log()
        assert status(kube, namespace, "alive")["phase"] == "Suspended"
    finally:
        proxy.stop()


def test_an_edit_of_a_suspended_job_takes_effect_and_of_a_running_one_is_refused(kube, namespace, s3_bucket, tenant):
    op = tenant()
    create(kube, namespace, job(s3_bucket, "paused", suspend=True))
    wait_phase(kube, namespace, "paused", "Suspended", operator=op)
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/paused", {"spec": {"training": {"learningRate": 0.000123}}})

    def rendered():
        cm = kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps/paused-config")
        return json.loads(cm["data"]["config.json"])["training"]["learningRate"] == 0.000123 and cm
    cm = wait_for(rendered, timeout=30, what="the config rendered again", describe=op.log_tail)
    assert cm["metadata"]["annotations"]["kubetune.io/spec-generation"] == "2"
    wait_for(lambda: status(kube, namespace, "paused").get("observedGeneration") == 2, timeout=30, what="observedGeneration 2")

    create(kube, namespace, job(s3_bucket, "sleep-run"))
    wait_phase(kube, namespace, "sleep-run", "Running", operator=op)
    with pytest.raises(Exception) as caught:
        kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/sleep-run", {"spec": {"training": {"learningRate": 0.000123}}})
    assert "spec.training can change only while no trainer runs on it" in str(caught.value)
