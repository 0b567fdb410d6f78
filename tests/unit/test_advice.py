"""`kubetune validate` warns (exit 0) where a valid spec may not work on every
cluster, and refuses (exit 1) what can never work, naming the field."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubetune_operator.api import parse_job
from kubetune_operator.api.advice import warnings
from kubetune_operator.cli import main

REPO = Path(__file__).resolve().parents[2]


def spec_of(name: str, **changes) -> dict:
    doc = yaml.safe_load((REPO / "examples" / name).read_text())
    for key, value in changes.items():
        doc["spec"][key] = value
    return doc


def test_the_multinode_example_is_valid_without_warnings_as_written():
    job = parse_job(spec_of("multinode-deepspeed.yaml")).job
    assert job is not None and warnings(job.spec) == []


def test_multinode_without_a_queue_on_cpu_nodes_and_a_shared_claim_warns():
    doc = spec_of("multinode-deepspeed.yaml", queueName=None, checkpoint={"uri": "pvc://ckpt/llama"})
    doc["spec"]["resources"] = {"gpusPerNode": 0}
    found = warnings(parse_job(doc).job.spec)
    assert [w.split(" ")[0] for w in found] == ["spec.distributed.nodes", "spec.distributed.nodes", "spec.checkpoint.uri"]
    assert "Kueue" in found[0] and "gloo" in found[1] and "ReadWriteMany" in found[2]


def test_validate_prints_warnings_and_still_passes(tmp_path, capsys):
    doc = spec_of("multinode-deepspeed.yaml", queueName=None)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"{path}: warning: spec.distributed.nodes 4 without spec.queueName" in err


def test_fsdp_and_too_many_nodes_for_one_process_are_refused_with_the_field(tmp_path, capsys):
    doc = spec_of("multinode-deepspeed.yaml")
    doc["spec"]["distributed"] = {"nodes": 2, "strategy": "fsdp"}
    doc["spec"]["resources"] = {"gpusPerNode": 0}
    solo = spec_of("quickstart.yaml", distributed={"nodes": 2, "strategy": "none"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([doc, solo]))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:19: spec.distributed: strategy fsdp is not available yet" in err and "use deepspeed with zeroStage 3" in err
    assert "spec.distributed: nodes > 1 needs a multi-node strategy (auto, ddp or deepspeed)" in err
