"""Pure parts of the trainer: config validation, translators to the library
configs, data-format logic, checkpoint commit/resume/retention on a local
store, the termination message. No training here."""

from __future__ import annotations

import json

import pytest

from kubetune_trainer.config import Columns, parse_config, redact
from kubetune_trainer.errors import InvalidConfig, InvalidDataset

BASE = {"model": {"uri": "file:///models/tiny"}, "data": {"trainUri": "file:///data/train.jsonl"}, "method": "lora"}


def cfg(**over):
    data = json.loads(json.dumps(BASE))
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return parse_config(data)


# --------------------------------------------------------------------------- config


def test_config_errors_are_one_line_naming_the_field():
    with pytest.raises(InvalidConfig) as e:
        cfg(training={"learningRate": -1})
    assert str(e.value).splitlines() == [str(e.value)]
    assert "training.learningRate" in str(e.value)
    with pytest.raises(InvalidConfig, match="method: Input should be 'lora', 'qlora' or 'full'"):
        cfg(method="dpo")
    with pytest.raises(InvalidConfig, match="model.uri"):
        cfg(model={"uri": "ftp://x"})
    with pytest.raises(InvalidConfig, match="earlyStopping needs evaluation data"):
        cfg(training={"earlyStopping": {"patience": 2}})


def test_redact_masks_secret_looking_values_and_url_credentials():
    out = redact({"s3": {"endpoint": "http://user:pw@minio:9000"}, "hfToken": "hf_abc", "apiKey": "k", "keepLast": 3, "model": {"uri": "s3://b/m"}})
    assert out == {"s3": {"endpoint": "http://***@minio:9000"}, "hfToken": "***", "apiKey": "***", "keepLast": 3, "model": {"uri": "s3://b/m"}}


# --------------------------------------------------------------------------- translators


def test_to_lora_config():
    from kubetune_trainer.translate import to_lora_config

    lc = to_lora_config(cfg(lora={"r": 8, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}))
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, sorted(lc.target_modules), lc.task_type) == (8, 16, 0.1, ["q_proj", "v_proj"], "CAUSAL_LM")
    assert to_lora_config(cfg()).target_modules == "all-linear"
    assert to_lora_config(cfg(method="full")) is None


def test_to_bnb_config():
    import torch

    from kubetune_trainer.translate import to_bnb_config

    q = to_bnb_config(cfg(method="qlora"))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.bfloat16
    q = to_bnb_config(cfg(method="qlora", quantization={"quantType": "fp4", "doubleQuant": False, "computeDtype": "float32"}))
    assert q.bnb_4bit_quant_type == "fp4" and not q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.float32
    assert to_bnb_config(cfg(quantization={"bits": 8})).load_in_8bit
    assert to_bnb_config(cfg()) is None


def test_to_sft_config(tmp_path):
    from kubetune_trainer.translate import to_sft_config

    c = cfg(training={"maxSteps": 100, "learningRate": 1e-4, "batchSize": 2, "gradientAccumulationSteps": 8, "warmupRatio": 0.1,
                      "evalEverySteps": 25, "seed": 3, "gradientCheckpointing": True},
            data={"maxSeqLength": 512, "packing": True}, checkpoint={"everySteps": 50})
    a = to_sft_config(c, output_dir=tmp_path, has_eval=True, completion_only_loss=True)
    assert (a.max_steps, a.learning_rate, a.per_device_train_batch_size, a.gradient_accumulation_steps) == (100, 1e-4, 2, 8)
    assert (a.warmup_steps, a.seed, a.data_seed, a.save_steps, a.eval_steps) == (0.1, 3, 3, 50, 25)
    assert a.packing and a.packing_strategy == "bfd" and a.max_length == 512 and a.completion_only_loss
    assert a.activation_checkpointing and not a.bf16 and not a.fp16 and a.use_cpu
    assert str(a.eval_strategy) in ("steps", "IntervalStrategy.STEPS") and a.report_to in ([], None, "none", ["none"])
    b = to_sft_config(cfg(training={"epochs": 2}), output_dir=tmp_path, has_eval=False)
    assert b.num_train_epochs == 2 and b.max_steps == -1 and str(b.eval_strategy) in ("no", "IntervalStrategy.NO")


def test_deepspeed_rendering():
    from kubetune_trainer.translate import render_deepspeed_config, to_sft_config

    assert render_deepspeed_config(cfg(), "fp32") is None
    z2 = render_deepspeed_config(cfg(distributed={"strategy": "deepspeed", "deepspeed": {"zeroStage": 2}}), "fp32")
    assert z2["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in z2["zero_optimization"]
    assert z2["bf16"] == {"enabled": "auto"} and z2["zero_force_ds_cpu_optimizer"] is False
    z3 = render_deepspeed_config(cfg(method="full", lora=None, distributed={"strategy": "deepspeed", "deepspeed": {"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True}}), "bf16")
    zo = z3["zero_optimization"]
    assert zo["stage"] == 3 and zo["offload_optimizer"]["device"] == "cpu" and zo["offload_param"]["device"] == "cpu"
    assert zo["stage3_gather_16bit_weights_on_model_save"] is True


def test_precision_resolution():
    from kubetune_trainer.translate import resolve_precision

    assert resolve_precision(cfg(), cuda=False, bf16_supported=False) == "fp32"
    assert resolve_precision(cfg(), cuda=True, bf16_supported=True) == "bf16"
    assert resolve_precision(cfg(), cuda=True, bf16_supported=False) == "fp16"
    assert resolve_precision(cfg(training={"precision": "fp32"}), cuda=True, bf16_supported=True) == "fp32"


# --------------------------------------------------------------------------- data


def test_format_detection_and_column_errors():
    from kubetune_trainer.data import check_columns, detect_format

    assert detect_format(["messages"], Columns(), "f") == "chat"
    assert detect_format(["prompt", "completion", "x"], Columns(), "f") == "completion"
    assert detect_format(["instruction", "input", "output"], Columns(), "f") == "instruction"
    assert detect_format(["text"], Columns(), "f") == "text"
    assert detect_format(["question", "answer"], Columns(prompt="question", completion="answer"), "f") == "completion"
    with pytest.raises(InvalidDataset, match=r"cannot detect the format from columns \[a, b\]"):
        detect_format(["a", "b"], Columns(), "train.jsonl")
    with pytest.raises(InvalidDataset) as e:
        check_columns(["question", "answer"], Columns(prompt="q"), "completion", "train.jsonl")
    assert str(e.value) == "train.jsonl: format completion needs column 'q' (mapped by dataset.columns.prompt); found columns: question, answer"


def test_split_is_deterministic_disjoint_and_dedupe():
    from kubetune_trainer.data import dedupe, split

    rows = [{"text": str(i)} for i in range(100)]
    a_train, a_eval = split(rows, 0.1, seed=5)
    b_train, b_eval = split(rows, 0.1, seed=5)
    c_train, c_eval = split(rows, 0.1, seed=6)
    assert a_eval == b_eval and a_eval != c_eval and len(a_eval) == 10 and len(a_train) == 90
    assert not {r["text"] for r in a_train} & {r["text"] for r in a_eval}
    assert dedupe(rows + rows[:7]) == (rows, 7)


def test_instruction_rows_become_prompt_completion():
    from datasets import Dataset

    from kubetune_trainer.data import normalise

    ds = Dataset.from_list([{"instruction": "Add", "input": "1 2", "output": "3"}, {"instruction": "Hi", "input": "", "output": "Hello"},
                            {"instruction": "x", "input": "", "output": ""}])
    rows, dropped = normalise(ds, "instruction", Columns(), "f", use_messages=False)
    assert rows[0] == {"prompt": "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n", "completion": "3"}
    assert rows[1]["prompt"] == "### Instruction:\nHi\n\n### Response:\n" and dropped == 1


# --------------------------------------------------------------------------- checkpoints


def _fake_checkpoint(path, step, payload=b"weights"):
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(payload * 10)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (path / "sub").mkdir()
    (path / "sub" / "rng_state_0.pth").write_bytes(b"rng")
    return path


def test_commit_marker_latest_partial_ignored_retention_and_corruption(tmp_path):
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    up = ck.Uploader(store, keep_last=2, staging=tmp_path / "staging", background=False)
    for step in (10, 20, 30):
        up.submit(_fake_checkpoint(tmp_path / f"local-{step}", step), step)
    assert [c.step for c in ck.list_committed(store)] == [20, 30]  # keepLast 2
    manifest = json.loads((tmp_path / "store/step-00000030/COMMITTED.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {"adapter_model.safetensors", "trainer_state.json", "sub/rng_state_0.pth"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])

    # A newer step without its marker (a crash mid-upload) is never resumed from.
    partial = tmp_path / "store/step-00000040"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half")
    step, local = ck.fetch_latest(store, tmp_path / "resume")
    assert step == 30 and (local / "sub/rng_state_0.pth").read_bytes() == b"rng"

    # A committed step whose file no longer matches its checksum falls back to the previous one.
    (tmp_path / "store/step-00000030/adapter_model.safetensors").write_bytes(b"corrupt!!!")
    step, _ = ck.fetch_latest(store, tmp_path / "resume2")
    assert step == 20

    # The next commit cleans the abandoned partial older than it.
    up.submit(_fake_checkpoint(tmp_path / "local-50", 50), 50)
    assert not partial.exists() and [c.step for c in ck.list_committed(store)] == [30, 50]


def test_background_uploader_survives_store_failure(tmp_path, monkeypatch):
    from kubetune_trainer import checkpointing as ck
    from kubetune_trainer.storage import open_store

    store = open_store(f"file://{tmp_path}/store")
    calls = {"n": 0}
    real = store.put_file

    def flaky(key, src, deadline_s=None, on_retry=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError("denied")  # not transient: this checkpoint is given up
        return real(key, src, deadline_s, on_retry)

    monkeypatch.setattr(store, "put_file", flaky)
    up = ck.Uploader(store, keep_last=3, staging=tmp_path / "staging")
    up.submit(_fake_checkpoint(tmp_path / "a", 1), 1)
    assert up.wait(30)
    up.submit(_fake_checkpoint(tmp_path / "b", 2), 2)
    assert up.close(30)
    assert up.failed == [1] and up.last_committed == 2
    assert [c.step for c in ck.list_committed(store)] == [2]


# --------------------------------------------------------------------------- termination message


def test_termination_message_shape_and_size():
    from kubetune_trainer.report import termination_message

    msg = json.loads(termination_message("LossDiverged", "x" * 10000, step=7, total_steps=10, metrics={"trainLoss": float("nan"), "evalLoss": 1.5}))
    assert set(msg) == {"reason", "message", "step", "totalSteps", "metrics", "checkpoint", "output"}
    assert msg["metrics"] == {"trainLoss": None, "evalLoss": 1.5, "tokensPerSecond": None}
    assert msg["output"] == {"adapterUri": None, "mergedUri": None, "reportUri": None}
    assert len(termination_message("Error", "y" * 10000).encode()) <= 4096


def test_metric_names_are_the_contract():
    from kubetune_trainer import metrics

    assert len(set(metrics.METRIC_NAMES)) == len(metrics.METRIC_NAMES) == 21
    assert all(n.startswith("kubetune_trainer_") for n in metrics.METRIC_NAMES)
    m = metrics.TrainerMetrics("ns", "job", 0)
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    for name in metrics.METRIC_NAMES:
        if name not in metrics.GPU_METRIC_NAMES:  # GPU series exist only with NVML
            assert f"\n{name}" in "\n" + text or f"# TYPE {name}" in text, name
