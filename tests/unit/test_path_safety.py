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
