"""Pure parts of the trainer: config validation, translators to the library
configs, data-format logic, checkpoint commit/resume/retention on a local
store, exporter selection, the report's outputs and the termination message.
No training here. Configs are FineTuneJob specs rendered by the operator's
renderer, as the trainer receives them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_contract.sections import ColumnMapping, DatasetSpec
from kubetune_trainer.config import parse_config, redact
from kubetune_trainer.errors import InvalidConfig, InvalidDataset
from tests.trainer.helpers import render_config

SPEC = {"model": {"uri": "file:///models/tiny"}, "dataset": {"trainUri": "file:///data/train.jsonl"}, "method": "lora"}
ROOT = Path("/nonexistent/kubetune-unit")  # default checkpoint/output locations; never written


def _merged(base: dict, over: dict) -> dict:
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cfg(**over):
    """The trainer's view of SPEC with `over` merged per section into the spec."""
    return parse_config(render_config(_merged(SPEC, over), ROOT))


def raw(**over):
    """The rendered SPEC with `over` merged into the config itself: what the
    trainer must refuse even when no spec would render it."""
    return parse_config(_merged(render_config(SPEC, ROOT), over))


# --------------------------------------------------------------------------- config


def test_config_errors_are_one_line_naming_the_field():
    with pytest.raises(InvalidConfig) as e:
        raw(training={"learningRate": -1})
    assert str(e.value).splitlines() == [str(e.value)]
    assert "training.learningRate" in str(e.value)
    with pytest.raises(InvalidConfig, match="method: Input should be 'lora', 'qlora' or 'full'"):
        raw(method="dpo")
    with pytest.raises(InvalidConfig, match="model.uri"):
        raw(model={"uri": "ftp://x"})
    with pytest.raises(InvalidConfig, match="earlyStopping needs evaluation data"):
        raw(training={"earlyStopping": {"patience": 2, "threshold": 0.0}})


def test_config_must_set_every_field():
    rendered = render_config(SPEC, ROOT)
    del rendered["checkpoint"]["keepLast"]
    with pytest.raises(InvalidConfig, match="fields not set: checkpoint.keepLast") as e:
        parse_config(rendered)
    assert str(e.value).splitlines() == [str(e.value)]


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
    from kubetune_trainer.recipes.sft import to_sft_config

    c = cfg(training={"maxSteps": 100, "learningRate": 1e-4, "batchSize": 2, "gradientAccumulationSteps": 8, "warmupRatio": 0.1,
                      "evalEverySteps": 25, "seed": 3, "gradientCheckpointing": True},
            dataset={"maxSeqLength": 512, "packing": True}, checkpoint={"everySteps": 50})
    a = to_sft_config(c, output_dir=tmp_path, has_eval=True, completion_only_loss=True)
    assert (a.max_steps, a.learning_rate, a.per_device_train_batch_size, a.gradient_accumulation_steps) == (100, 1e-4, 2, 8)
    assert (a.warmup_steps, a.seed, a.data_seed, a.save_steps, a.eval_steps) == (0.1, 3, 3, 50, 25)
    assert a.packing and a.packing_strategy == "bfd" and a.max_length == 512 and a.completion_only_loss
    assert a.activation_checkpointing and not a.bf16 and not a.fp16 and a.use_cpu
    assert str(a.eval_strategy) in ("steps", "IntervalStrategy.STEPS") and a.report_to in ([], None, "none", ["none"])
    b = to_sft_config(cfg(training={"epochs": 2}), output_dir=tmp_path, has_eval=False)
    assert b.num_train_epochs == 2 and b.max_steps == -1 and str(b.eval_strategy) in ("no", "IntervalStrategy.NO")


def test_deepspeed_rendering():
    from kubetune_trainer.translate import render_deepspeed_config

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
    from kubetune_trainer.data.preflight import check_columns, dataset_format

    def detect(columns: list[str], mapping: ColumnMapping | None = None, source: str = "f") -> str:
        return dataset_format(DatasetSpec(train_uri="file:///d.jsonl", columns=mapping), columns, source)

    assert detect(["messages"]) == "chat"
    assert detect(["prompt", "completion", "x"]) == "completion"
    assert detect(["instruction", "input", "output"]) == "instruction"
    assert detect(["text"]) == "text"
    assert detect(["question", "answer"], ColumnMapping(prompt="question", completion="answer")) == "completion"
    with pytest.raises(InvalidDataset, match=r"^train.jsonl: cannot detect the format from columns \[a, b\]"):
        detect(["a", "b"], source="train.jsonl")
    declared = DatasetSpec(train_uri="file:///d.jsonl", format="text")
    assert dataset_format(declared, ["a"], "f") == "text"  # a declared format is not second-guessed
    with pytest.raises(InvalidDataset) as e:
        check_columns(["question", "answer"], ColumnMapping(prompt="q"), "completion", "train.jsonl")
    assert str(e.value) == "train.jsonl: format completion needs column 'q' (mapped by dataset.columns.prompt); found columns: question, answer"
    with pytest.raises(InvalidDataset, match=r"needs column 'prompt' \(set dataset.columns.prompt if yours is named differently\)"):
        check_columns(["question"], None, "completion", "train.jsonl")


def test_chat_rows_are_checked_by_the_contract_with_their_location():
    from datasets import Dataset

    from kubetune_trainer.data.normalise import normalise

    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    rows, _ = normalise(Dataset.from_list([good]), "chat", None, "f", use_messages=True)
    assert rows == [good]
    bad = Dataset.from_list([good, {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}])
    with pytest.raises(InvalidDataset, match=r"^chat.jsonl: row 2: messages\[1\].role 'robot' is not one of"):
        normalise(bad, "chat", None, "chat.jsonl", use_messages=True)
    last_user = Dataset.from_list([{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}])
    with pytest.raises(InvalidDataset, match="row 1: the last message must be the assistant's answer"):
        normalise(last_user, "chat", None, "f", use_messages=False)


def test_split_is_deterministic_disjoint_and_dedupe():
    from kubetune_trainer.data.held_out import split
    from kubetune_trainer.data.normalise import dedupe

    rows = [{"text": str(i)} for i in range(100)]
    a_train, a_eval = split(rows, 0.1, seed=5)
    b_train, b_eval = split(rows, 0.1, seed=5)
    c_train, c_eval = split(rows, 0.1, seed=6)
    assert a_eval == b_eval and a_eval != c_eval and len(a_eval) == 10 and len(a_train) == 90
    assert not {r["text"] for r in a_train} & {r["text"] for r in a_eval}
    assert dedupe(rows + rows[:7]) == (rows, 7)


def test_instruction_rows_become_prompt_completion():
    from datasets import Dataset

    from kubetune_trainer.data.normalise import normalise

    ds = Dataset.from_list([{"instruction": "Add", "input": "1 2", "output": "3"}, {"instruction": "Hi", "input": "", "output": "Hello"},
                            {"instruction": "x", "input": "", "output": ""}])
    rows, dropped = normalise(ds, "instruction", ColumnMapping(), "f", use_messages=False)
    assert rows[0] == {"prompt": "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n", "completion": "3"}
    assert rows[1]["prompt"] == "### Instruction:\nHi\n\n### Response:\n" and dropped == 1


# --------------------------------------------------------------------------- checkpoints


def _published_checkpoint(metrics) -> str | None:
    for family in metrics.registry.collect():
        if family.name == "kubetune_trainer_last_committed_checkpoint":
            return next((sample.labels.get("uri") for sample in family.samples), None)
    return None


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

    from kubetune_trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics("ns", "job", 0)
    store = open_store(f"file://{tmp_path}/store")
    up = ck.Uploader(store, keep_last=2, staging=tmp_path / "staging", background=False, metrics=metrics)
    for step in (10, 20, 30):
        up.submit(_fake_checkpoint(tmp_path / f"local-{step}", step), step)
    assert [c.step for c in ck.list_committed(store)] == [20, 30]  # keepLast 2
    # The newest commit is published with the URI it was written to.
    published = _published_checkpoint(metrics)
    assert published == f"file://{tmp_path}/store/step-00000030"
    assert (Path(published.removeprefix("file://")) / "COMMITTED.json").is_file()
    assert metrics.registry.get_sample_value("kubetune_trainer_last_committed_step", metrics.labels) == 30
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


# --------------------------------------------------------------------------- outputs


def _full(**over):
    return cfg(method="full", **over)


@pytest.mark.parametrize("config,expected", [
    (lambda: cfg(), ["adapter"]),
    (lambda: cfg(output={"merge": True}), ["adapter", "merged"]),
    (lambda: cfg(method="qlora"), ["adapter"]),
    (lambda: cfg(method="qlora", output={"merge": True}), ["adapter", "merged"]),
    (lambda: _full(), ["merged"]),
    (lambda: _full(output={"merge": True}), ["merged"]),
], ids=["lora", "lora-merge", "qlora", "qlora-merge", "full", "full-merge"])
def test_exporters_selected_by_method_and_merge(config, expected):
    from kubetune_trainer.exporters import selected

    assert selected(config()) == expected


def _session(tmp_path, config, trained_files: dict[str, bytes]):
    """A session as the save step leaves it, with no model: the trained directory
    holds the given files, the Trainer only its log history."""
    from types import SimpleNamespace

    from kubetune_trainer.callbacks import StopFlag
    from kubetune_trainer.distributed import Topology
    from kubetune_trainer.session import RunState, Session

    trained = tmp_path / "work" / "trained"
    for name, data in trained_files.items():
        (trained / name).parent.mkdir(parents=True, exist_ok=True)
        (trained / name).write_bytes(data)
    history = [{"step": 1, "loss": 2.0, "learning_rate": 1e-3}, {"step": 2, "loss": 1.0, "learning_rate": 5e-4}]
    s = Session(cfg=config, state=RunState(summary={"job": "ns/job"}), metrics=None, topo=Topology(rank=0, world_size=1, local_rank=0),
                workdir=tmp_path / "work", cuda=False, bf16_supported=False, stop_flag=StopFlag(), checkpoints=None,
                trainer=SimpleNamespace(state=SimpleNamespace(log_history=history)), tokenizer=None, model_dir=tmp_path / "base")
    s.trained = trained
    return s


def test_outputs_are_what_the_exporters_produced_plus_the_report(tmp_path):
    """The export and report steps upload under output.uri, and the run's outputs
    (hence the termination message) name exactly what was produced."""
    from kubetune_trainer.report import termination_message
    from kubetune_trainer.run import export, report

    out = tmp_path / "out"
    # PEFT names the directory it loaded the base from: the pod's download cache.
    peft_config = json.dumps({"base_model_name_or_path": "/tmp/kubetune/cache/models/0123abcd", "r": 16}).encode()
    s = _session(tmp_path, cfg(output={"uri": f"file://{out}"}), {"adapter_model.safetensors": b"lora", "tokenizer.json": b"{}",
                                                                   "adapter_config.json": peft_config})
    exports = export(s)
    assert exports == {"adapter": f"file://{out}/adapter"}
    report(s, exports)
    assert s.state.output == {"adapterUri": f"file://{out}/adapter", "reportUri": f"file://{out}/report.html"}
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == b"lora"
    # The exported adapter names the base as the user does (hf://org/name -> org/name), and has a model card.
    exported = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert exported == {"base_model_name_or_path": s.cfg.model.uri.removeprefix("hf://"), "r": 16}
    assert (out / "adapter" / "README.md").read_text().startswith(f"---\nbase_model: {exported['base_model_name_or_path']}\n")
    assert {p.name for p in out.iterdir()} == {"adapter", "metrics.json", "report.md", "report.html"}
    assert json.loads((out / "metrics.json").read_text())["output"] == {"uri": f"file://{out}", "adapterUri": f"file://{out}/adapter"}
    message = json.loads(termination_message("Completed", "done", output=s.state.output))
    assert message["output"] == {"adapterUri": f"file://{out}/adapter", "reportUri": f"file://{out}/report.html"}

    # method full: the trained model is the merged model; no adapter is named.
    full_out = tmp_path / "full-out"
    s = _session(tmp_path / "full", _full(output={"uri": f"file://{full_out}"}), {"model.safetensors": b"weights"})
    report(s, export(s))
    assert s.state.output == {"mergedUri": f"file://{full_out}/merged", "reportUri": f"file://{full_out}/report.html"}
    assert (full_out / "merged" / "model.safetensors").read_bytes() == b"weights"


def test_only_rank_0_exports_and_reports(tmp_path):
    from kubetune_trainer.distributed import Topology
    from kubetune_trainer.run import export, report

    out = tmp_path / "out"
    s = _session(tmp_path, cfg(output={"uri": f"file://{out}"}), {"adapter_model.safetensors": b"lora"})
    s.topo = Topology(rank=1, world_size=2, local_rank=1)
    report(s, export(s))
    assert s.state.output == {} and not out.exists()


# --------------------------------------------------------------------------- termination message


def test_termination_message_shape_and_size():
    from kubetune_trainer.report import termination_message

    msg = json.loads(termination_message("LossDiverged", "x" * 10000, step=7, total_steps=10, metrics={"trainLoss": float("nan"), "evalLoss": 1.5}))
    assert set(msg) == {"reason", "message", "step", "totalSteps", "metrics", "checkpoint", "output"}
    assert msg["metrics"] == {"trainLoss": None, "evalLoss": 1.5, "tokensPerSecond": None}
    assert msg["output"] == {}  # nothing was produced, so nothing is named
    assert len(termination_message("Error", "y" * 10000).encode()) <= 4096


def test_metric_names_are_the_contract():
    from kubetune_contract import metric_names
    from kubetune_trainer import metrics

    assert metrics.METRIC_NAMES == metric_names.METRIC_NAMES and metrics.EXPOSED_NAMES == metric_names.EXPOSED_NAMES
    assert len(set(metrics.METRIC_NAMES)) == len(metrics.METRIC_NAMES) == 33
    assert all(n.startswith("kubetune_trainer_") for n in metrics.METRIC_NAMES)
    m = metrics.TrainerMetrics("ns", "job", 0)
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    for name in metrics.METRIC_NAMES:
        if name not in metrics.GPU_METRIC_NAMES:  # GPU series exist only with NVML
            assert f"\n{name}" in "\n" + text or f"# TYPE {name}" in text, name


def test_logged_values_have_no_series_before_the_first_log():
    """A dashboard must not read a loss of 0 before training logged one."""
    from kubetune_contract import metric_names as names
    from kubetune_trainer import metrics
    from prometheus_client import generate_latest

    m = metrics.TrainerMetrics("ns", "job", 0)
    samples = [line for line in generate_latest(m.registry).decode().splitlines() if not line.startswith("#")]
    assert not [s for s in samples if s.startswith(names.LOSS + "{")]
    assert [s for s in samples if s.startswith(names.STEP + "{")], "bound gauges still export from the start"
    m.loss.set(2.5)
    text = generate_latest(m.registry).decode()
    assert f'{names.LOSS}{{job="job",namespace="ns",rank="0"}} 2.5' in text


def test_lora_config_carries_dora_and_modules_to_save():
    from kubetune_trainer.translate import to_lora_config

    plain = to_lora_config(cfg())
    assert plain.use_dora is False and not plain.modules_to_save
    dora = to_lora_config(cfg(lora={"useDora": True, "modulesToSave": ["lm_head"]}))
    assert dora.use_dora is True and list(dora.modules_to_save) == ["lm_head"]
