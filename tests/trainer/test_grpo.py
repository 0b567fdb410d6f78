"""objective grpo in-process on the tiny model: TRL's GRPOTrainer with the
built-in rewards. A random-init model answering with an exact-match reward has
no signal to learn from, so the run starts from a short SFT adapter (it answers
with numbers, mostly wrong ones) and learns with the dense numericCloseness
reward: seeded, the mean reward over the last quarter of the steps beats the
first quarter's by more than a tenth of the reward's range."""

from __future__ import annotations

import json

import pytest

from .helpers import base_config
from .test_preference import train

pytestmark = pytest.mark.trainer
MAX_ERROR = 24.0  # the numeric task's answers are 0..23: the reward ranges over [-24, 0]


def test_grpo_from_an_sft_adapter_raises_the_numeric_closeness_reward(tiny_model, dataset, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    sft = tmp_path / "sft"
    code, _ = train(base_config(tiny_model, dataset("numeric"), training={"maxSteps": 3}, output={"uri": f"file://{sft}"},
                                checkpoint={"uri": f"file://{tmp_path}/sft-ckpt"}), tmp_path, monkeypatch, "sft")
    assert code == 0
    out = tmp_path / "grpo"
    prompts = make_tiny_dataset(tmp_path / "prompts.jsonl", "prompts", 192)
    cfg = base_config(tiny_model, prompts, objective="grpo", lora=None, dataset={"evalSplit": None},
                      model={"uri": f"file://{tiny_model}", "adapterFrom": f"file://{sft}/adapter"},
                      grpo={"numGenerations": 4, "maxCompletionLength": 4, "temperature": 1.5,
                            "rewards": [{"type": "numericCloseness", "maxError": MAX_ERROR}]},
                      training={"maxSteps": 40, "batchSize": 8, "logEverySteps": 1}, output={"uri": f"file://{out}"},
                      checkpoint={"uri": f"file://{tmp_path}/grpo-ckpt"})
    code, result = train(cfg, tmp_path, monkeypatch, "grpo")
    assert code == 0, result
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data"]["format"] == "prompts"
    rewards = [h["rewardMean"] for h in summary["history"] if "rewardMean" in h]
    assert len(rewards) == 40
    q = len(rewards) // 4
    first, last = sum(rewards[:q]) / q, sum(rewards[-q:]) / q
    assert last > first + 0.1 * MAX_ERROR, (first, last, rewards)
    assert "GRPO reward (training batches)" in (out / "report.md").read_text()

    tok = AutoTokenizer.from_pretrained(out / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter")
    enc = tok("Number for kaka:", return_tensors="pt")
    gen = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc.input_ids.shape[1]


def test_a_reward_needing_answers_refuses_rows_without_one(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Number for kaka:", "answer": "3"}) + "\n" + json.dumps({"prompt": "Number for zori:"}) + "\n")
    cfg = base_config(tiny_model, path, objective="grpo", dataset={"evalSplit": None},
                      grpo={"numGenerations": 2, "rewards": [{"type": "exactMatch"}]}, training={"maxSteps": 2, "batchSize": 2})
    code, result = train(cfg, tmp_path, monkeypatch)
    assert code == 2 and result["reason"] == "InvalidDataset", result
    assert f"file://{path}: row 2: reward exactMatch compares with the row's answer, and it has none" in result["message"]


def test_grpo_kill9_resumes_from_the_last_committed_checkpoint(tiny_model, dataset, tmp_path, minio, bucket, launch):
    """As for SFT (test_resilience): a GRPO trainer killed with SIGKILL mid-run resumes at
    the committed step and retrains nothing before it."""
    import re
    import signal

    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    from .helpers import committed_steps, wait_for

    client = minio.client()
    cfg = base_config(tiny_model, make_tiny_dataset(tmp_path / "prompts.jsonl", "prompts", 96), objective="grpo", dataset={"evalSplit": None},
                      grpo={"numGenerations": 4, "maxCompletionLength": 4, "rewards": [{"type": "numericCloseness", "maxError": MAX_ERROR},
                                                                                        {"type": "regex", "pattern": r"\d", "weight": 2.0}]},
                      training={"maxSteps": 12, "batchSize": 8, "logEverySteps": 1},
                      checkpoint={"uri": f"s3://{bucket}/job/ckpt", "everySteps": 6, "keepLast": 2}, output={"uri": f"s3://{bucket}/job/out"})
    first = launch(cfg, tmp_path / "first")
    wait_for(lambda: committed_steps(client, bucket, "job/ckpt/"), 240, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.wait()
    at_kill = committed_steps(client, bucket, "job/ckpt/")
    assert at_kill and max(at_kill) < 12, at_kill

    second = launch(cfg, tmp_path / "second")
    assert second.wait() == 0, second.output()[-3000:]
    assert f"resuming from committed checkpoint step {max(at_kill)}" in second.output()
    logged = [int(m) for m in re.findall(r"step (\d+)/\d+ loss", second.output())]
    assert logged and min(logged) > max(at_kill), logged
    summary = json.loads(client.get_object(Bucket=bucket, Key="job/out/metrics.json")["Body"].read())
    assert summary["train"]["resumedFrom"] == max(at_kill) and second.result()["step"] == 12
    assert committed_steps(client, bucket, "job/ckpt/") == [6, 12]
