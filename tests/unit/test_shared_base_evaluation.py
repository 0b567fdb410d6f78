"""The trainer's cached base evaluation: a sweep's trials keep one per
fingerprint in the sweep's shared prefix, with a checksum; a run outside a
sweep keeps it beside its checkpoints. (The measured saving: make bench-sweep.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

from kubetune_trainer import evaluation_steps as steps
from kubetune_trainer.storage import open_store

BASE = {"metrics": {"evalLoss": 3.2, "exactMatch": 0.0}, "seconds": 4.5}


def _session(tmp_path, shared: bool):
    checkpoints = open_store(f"file://{tmp_path}/trial/checkpoints")
    store = open_store(f"file://{tmp_path}/sweep/shared") if shared else None
    return SimpleNamespace(shared=store, checkpoints=checkpoints, topo=SimpleNamespace(is_main=True), cfg=None)


def test_a_sweep_trial_keys_the_cache_by_fingerprint_in_the_shared_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "fingerprint", lambda cfg: "abc123")
    store, key = steps._cache(_session(tmp_path, shared=True))
    assert key == "base-evaluation/abc123.json" and store.uri.endswith("/sweep/shared")
    store, key = steps._cache(_session(tmp_path, shared=False))
    assert key == "base-eval.json" and store.uri.endswith("/trial/checkpoints")


def test_a_cached_evaluation_is_used_only_for_its_fingerprint_and_checksum(tmp_path):
    store = open_store(f"file://{tmp_path}/shared")
    body = {"fingerprint": "f1", "base": BASE, "sha256": steps._checksum(BASE)}
    store.put_bytes("base-evaluation/f1.json", json.dumps(body).encode())
    assert steps._read_cached(store, "base-evaluation/f1.json", "f1") == BASE
    assert steps._read_cached(store, "base-evaluation/f1.json", "f2") is None  # measured something else
    tampered = {**body, "base": {**BASE, "metrics": {"evalLoss": 0.1}}}
    store.put_bytes("base-evaluation/f1.json", json.dumps(tampered).encode())
    assert steps._read_cached(store, "base-evaluation/f1.json", "f1") is None  # checksum says it changed
    store.put_bytes("base-evaluation/f1.json", b"{not json")
    assert steps._read_cached(store, "base-evaluation/f1.json", "f1") is None
    assert steps._read_cached(store, "base-evaluation/none.json", "f1") is None
