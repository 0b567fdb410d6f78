"""Checkpoints written by several nodes: each node uploads its own files and a
part record; node 0 commits once every part is there, with a manifest of every
node's files; each node resumes from node 0's files and its own. Real storage
(a local directory through the trainer's Store); no sleeps (the part wait takes
an injected clock)."""

from __future__ import annotations

import json

import pytest

from kubetune_contract.checkpoints import MARKER, node_of_part, part_key, step_dir


def _node_files(root, step: int, node: int, files: dict[str, bytes]):
    local = root / f"node{node}-local-{step}"
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
    return local


NODE_FILES = {
    0: {"adapter_model.safetensors": b"weights" * 10, "trainer_state.json": b"{}", "rng_state_0.pth": b"rng0",
        "global_step4/zero_pp_rank_0_mp_rank_00_optim_states.pt": b"shard0", "latest": b"global_step4"},
    1: {"rng_state_1.pth": b"rng1", "global_step4/zero_pp_rank_1_mp_rank_00_optim_states.pt": b"shard1"},
    2: {"rng_state_2.pth": b"rng2", "global_step4/zero_pp_rank_2_mp_rank_00_optim_states.pt": b"shard2"},
}


def _uploader(store, tmp_path, node: int, nodes: int, **kw):
    from kubetune_trainer.checkpointing import Uploader

    return Uploader(store, keep_last=2, staging=tmp_path / f"staging{node}", background=False, node=node, nodes=nodes, **kw)


def test_part_record_names_are_the_contracts():
    assert part_key(3) == "_parts/node-3.json"
    assert node_of_part("node-3.json") == 3 and node_of_part("node-x.json") is None


def test_every_node_uploads_its_part_and_node_0_commits_all_of_them(tmp_path):
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.metrics import TrainerMetrics
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    metrics = TrainerMetrics("ns", "job", 0)
    node0 = _uploader(store, tmp_path, 0, 3, metrics=metrics)
    for node in (1, 2):  # the other nodes' parts first: node 0 then finds them at once
        _uploader(store, tmp_path, node, 3).submit(_node_files(tmp_path, 4, node, NODE_FILES[node]), 4)
        assert ck.list_committed(store) == []  # a part alone never makes a step resumable
    node0.submit(_node_files(tmp_path, 4, 0, NODE_FILES[0]), 4)

    (committed,) = ck.list_committed(store)
    manifest = committed.manifest
    assert committed.step == 4 and manifest["nodes"] == 3
    by_path = {f["path"]: f["node"] for f in manifest["files"]}
    assert by_path == {path: node for node, files in NODE_FILES.items() for path in files}
    assert metrics.registry.get_sample_value("kubetune_trainer_last_committed_step", metrics.labels) == 4
    assert node0.last_committed == 4

    # Node 2 resumes from node 0's files and its own, every one verified; not node 1's shards.
    local = ck.download(store, committed, tmp_path / "resume2", node=2)
    got = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file() and p.name != ".kubetune-verified")
    assert got == sorted([*NODE_FILES[0], *NODE_FILES[2]])
    assert (local / "global_step4/zero_pp_rank_2_mp_rank_00_optim_states.pt").read_bytes() == b"shard2"


def test_a_corrupt_file_of_one_node_fails_only_that_nodes_download(tmp_path):
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    _uploader(store, tmp_path, 1, 2).submit(_node_files(tmp_path, 4, 1, NODE_FILES[1]), 4)
    _uploader(store, tmp_path, 0, 2).submit(_node_files(tmp_path, 4, 0, NODE_FILES[0]), 4)
    (tmp_path / "store" / step_dir(4) / "rng_state_1.pth").write_bytes(b"flipped")
    (committed,) = ck.list_committed(store)
    assert ck.try_download(store, committed, tmp_path / "r0", node=0)
    assert not ck.try_download(store, committed, tmp_path / "r1", node=1)
    assert not (tmp_path / "r1").exists()  # nothing half-verified left to resume from


def test_node_0_waits_for_missing_parts_until_its_deadline(tmp_path):
    from kubetune_trainer import checkpoint_parts as parts
    from kubetune_trainer.errors import CheckpointFailed
    from kubetune_trainer.storage import open_store

    step_store = open_store(f"file://{tmp_path}/store").child(step_dir(4))
    parts.write_part(step_store, 4, 0, [], 5)
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(CheckpointFailed, match=r"no part from node\(s\) 1, 2 before the upload deadline"):
        parts.wait_for_parts(step_store, 3, deadline=10.0, superseded=lambda: False, clock=lambda: now[0], sleep=sleep)
    assert sleeps[:4] == [0.2, 0.4, 0.8, 1.6] and max(sleeps) == parts.POLL_MAX_S  # polls storage, backing off
    # A part that arrives while waiting ends the wait.
    parts.write_part(step_store, 4, 1, [], 5)
    parts.write_part(step_store, 4, 2, [], 5)
    parts.wait_for_parts(step_store, 3, deadline=0.0, superseded=lambda: False, clock=lambda: 1.0, sleep=sleep)


def test_a_newer_checkpoint_ends_the_wait_for_an_older_ones_parts(tmp_path):
    from kubetune_trainer import checkpoint_parts as parts
    from kubetune_trainer.storage import open_store

    step_store = open_store(f"file://{tmp_path}/store").child(step_dir(4))
    with pytest.raises(parts.Superseded):
        parts.wait_for_parts(step_store, 2, deadline=1e9, superseded=lambda: True, clock=lambda: 0.0, sleep=lambda s: None)


def test_two_nodes_writing_one_path_differently_is_never_committed(tmp_path):
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    _uploader(store, tmp_path, 1, 2).submit(_node_files(tmp_path, 4, 1, {"trainer_state.json": b'{"node": 1}'}), 4)
    node0 = _uploader(store, tmp_path, 0, 2)
    node0.submit(_node_files(tmp_path, 4, 0, NODE_FILES[0]), 4)
    assert ck.list_committed(store) == [] and node0.failed == [4]
    assert not (tmp_path / "store" / step_dir(4) / MARKER).exists()


def test_a_one_node_marker_without_node_tags_still_resumes(tmp_path):
    """Checkpoints committed before part records existed list node 0's files untagged."""
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    _uploader(store, tmp_path, 0, 1).submit(_node_files(tmp_path, 4, 0, NODE_FILES[0]), 4)
    marker = tmp_path / "store" / step_dir(4) / MARKER
    old = json.loads(marker.read_text())
    old.pop("nodes")
    for f in old["files"]:
        f.pop("node")
    marker.write_text(json.dumps(old))
    (committed,) = ck.list_committed(store)
    local = ck.download(store, committed, tmp_path / "resume", node=0)
    assert (local / "rng_state_0.pth").read_bytes() == b"rng0"


def test_other_nodes_prune_their_local_checkpoints(tmp_path):
    """The Trainer rotates local checkpoints on global rank 0 only; the other nodes' local rank 0 prunes."""
    from kubetune_trainer.callbacks import prune_local

    for step in (5, 10, 15, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint: left alone
    prune_local(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-15", "checkpoint-20", "checkpoint-x"]
