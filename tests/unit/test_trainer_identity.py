"""The trainer runs only a config rendered for its own FineTuneJob: a
ConfigMap of the job's name made by someone else before the job existed cannot
carry its UID, and is refused before anything reads it."""
from __future__ import annotations

import json

from kubetune_contract.config import parse_config
from kubetune_operator.builders import build_training_objects

from .test_builders import CFG, UID, example


def _config(uid: str):
    job = example("quickstart.yaml", uid=uid)
    cm = next(o for o in build_training_objects(job, CFG) if o["kind"] == "ConfigMap")
    return parse_config(json.loads(cm["data"]["config.json"]))


def test_a_config_without_this_job_s_uid_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from kubetune_trainer.__main__ import main

    term = tmp_path / "termination.json"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(term))
    monkeypatch.setenv("KUBETUNE_JOB_UID", UID)
    assert main(_config("11111111-2222-3333-4444-555555555555")) == 2
    report = json.loads(term.read_text())
    assert report["reason"] == "InvalidConfig" and "is not this job's" in report["message"] and UID in report["message"]


def test_the_pod_is_given_its_job_s_uid_and_the_config_carries_the_same():
    job = example("quickstart.yaml")
    objects = {o["kind"]: o for o in build_training_objects(job, CFG)}
    env = {e["name"]: e.get("value") for e in objects["Job"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBETUNE_JOB_UID"] == UID == json.loads(objects["ConfigMap"]["data"]["config.json"])["job"]["uid"]
