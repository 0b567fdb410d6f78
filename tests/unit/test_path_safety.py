"""Downloads stay inside their directory whatever object names a store holds
(`..`, absolute, through a link): the trainer's fetch, model download and
checkpoint download, and the serving pod's fetch script (run as a real
process against a stand-in boto3 that lists hostile keys)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubetune_trainer import checkpointing, storage
from kubetune_trainer.errors import CheckpointFailed
from kubetune_trainer.storage import UnsafeKey, inside

HOSTILE = ["../escaped.txt", "a/../../escaped.txt", "/etc/escaped.txt", "sub/../../../escaped.txt"]


@pytest.mark.parametrize("key", HOSTILE)
def test_an_object_name_cannot_leave_the_download_directory(tmp_path, key):
    with pytest.raises(UnsafeKey, match="outside"):
        inside(tmp_path / "dst", key)
    assert inside(tmp_path / "dst", "ok/file.bin") == tmp_path / "dst" / "ok" / "file.bin"


def test_a_link_inside_does_not_lead_out(tmp_path):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeKey, match="resolves outside"):
        inside(tmp_path / "dst", "link/escaped.txt")


class HostileStore:
    """A store listing names someone else wrote."""

    uri = "s3://shared/prefix"

    def __init__(self, keys):
        self.keys, self.fetched = keys, []

    def is_file(self):
        return False

    def list(self, prefix=""):
        return [storage.ObjectInfo(key=k, size=1) for k in self.keys]

    def get_file(self, key, dst):
        self.fetched.append(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("x")


def test_fetch_refuses_a_hostile_listing_and_writes_nothing_outside(tmp_path, monkeypatch):
    store = HostileStore(["fine.jsonl", "../escaped.txt"])
    monkeypatch.setattr(storage, "open_store", lambda *a, **k: store)
    with pytest.raises(UnsafeKey):
        storage.fetch("s3://shared/prefix", tmp_path / "dst")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_checkpoint_manifest_naming_a_path_outside_is_not_resumed(tmp_path):
    committed = checkpointing.Committed(step=10, manifest={"step": 10, "files": [{"path": "../../escaped.txt", "size": 1, "sha256": "0"}]})
    store = HostileStore([])
    with pytest.raises(CheckpointFailed, match="outside"):
        checkpointing.download(store, committed, tmp_path / "resume" / "step-10")
    assert store.fetched == [] and not (tmp_path / "escaped.txt").exists()
    assert checkpointing.try_download(store, committed, tmp_path / "resume" / "step-10") is False  # an older one is tried


def test_the_serving_fetch_script_refuses_a_key_outside_its_directory(tmp_path):
    from kubetune_operator.builders.serving import FETCH_SCRIPT

    stub = tmp_path / "stub"
    stub.mkdir()
    # A stand-in for boto3 (no store here): lists one good and one hostile key, "downloads" by writing the key.
    (stub / "boto3.py").write_text(
        "class _P:\n"
        "    def paginate(self, Bucket, Prefix):\n"
        "        return [{'Contents': [{'Key': Prefix + 'adapter/ok.bin'}, {'Key': Prefix + '../../escaped.txt'}]}]\n"
        "class _C:\n"
        "    def get_paginator(self, name): return _P()\n"
        "    def download_file(self, bucket, key, path): open(path, 'w').write(key)\n"
        "def client(name): return _C()\n")
    dest = tmp_path / "models" / "adapters" / "a"
    run = subprocess.run([sys.executable, "-c", FETCH_SCRIPT, "s3://bucket/jobs/x", str(dest)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(stub)}, timeout=30)
    assert run.returncode != 0 and "refusing jobs/x/../../escaped.txt" in run.stderr, run.stderr
    assert not list(tmp_path.rglob("escaped.txt"))
    assert (dest / "adapter" / "ok.bin").read_text() == "jobs/x/adapter/ok.bin"


def test_every_pvc_and_s3_location_gets_its_mount_and_credentials():
    """evaluation.testUri and model.adapterFrom on pvc:// are mounted in the
    trainer's pod; an s3:// testUri gets the S3 credentials though checkpoints
    and outputs are on a PVC; a pvc:// model is mounted in the serving pod."""
    from kubetune_operator.builders import build_serving_objects, build_training_objects

    from .test_builders import CFG, example

    job = example("quickstart.yaml", model={"uri": "pvc://models/base", "adapterFrom": "pvc://adapters/earlier"},
                  dataset={"trainUri": "pvc://data/train.jsonl"}, evaluation={"testUri": "pvc://tests/test.jsonl"},
                  checkpoint={"uri": "pvc://work/ckpt"}, output={"uri": "pvc://work/out"})
    pod = next(o for o in build_training_objects(job, CFG) if o["kind"] == "Job")["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["models", "adapters", "data", "tests", "work"]
    assert not any(e["name"] == "AWS_ACCESS_KEY_ID" for e in pod["containers"][0]["env"])
    on_s3 = example("quickstart.yaml", model={"uri": "pvc://models/base"}, dataset={"trainUri": "pvc://data/train.jsonl"},
                    evaluation={"testUri": "s3://kubetune-demo/tests/test.jsonl"}, checkpoint={"uri": "pvc://work/ckpt"},
                    output={"uri": "pvc://work/out"})
    pod = next(o for o in build_training_objects(on_s3, CFG) if o["kind"] == "Job")["spec"]["template"]["spec"]
    assert any(e["name"] == "AWS_ACCESS_KEY_ID" for e in pod["containers"][0]["env"])
    served = example("quickstart.yaml", model={"uri": "pvc://models/base"}, serving={"enabled": True, "gpus": 0, "mode": "adapter"},
                     output={"uri": "pvc://work/out"})
    served.status = None
    from kubetune_operator.api.status import FineTuneJobStatus

    served = served.model_copy(update={"status": FineTuneJobStatus.model_validate({"output": {"adapterUri": "pvc://work/out/adapter"}}, by_alias=True)})
    deployment = next(o for o in build_serving_objects(served, CFG) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert [v["persistentVolumeClaim"] for v in deployment["volumes"] if "persistentVolumeClaim" in v] == [
        {"claimName": "models", "readOnly": True}, {"claimName": "work", "readOnly": True}]
    mounts = {m["mountPath"] for m in deployment["containers"][0]["volumeMounts"]}
    assert {"/mnt/pvc/models", "/mnt/pvc/work"} <= mounts
    args = deployment["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "/mnt/pvc/models/base"
