"""The trainer in-process on the tiny model: LoRA, packing, QLoRA, formats, outputs.

In-process (main(cfg)) saves the ~8 s of imports a subprocess pays; the
process-level behaviours (kill -9, SIGTERM, torchrun, outages) are in
test_resilience.py and test_distributed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import base_config, output_dir

pytestmark = pytest.mark.trainer


def train(cfg: dict, tmp_path: Path, monkeypatch, name: str = "run") -> tuple[int, dict, Path]:
    from kubetune_trainer.__main__ import main
    from kubetune_trainer.config import parse_config

    wd = tmp_path / name
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(wd / "work"))
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(wd / "termination.json"))
    wd.mkdir(parents=True, exist_ok=True)
    code = main(parse_config(cfg))
    return code, json.loads((wd / "termination.json").read_text()), wd


def test_lora_learns_beats_base_and_exports(tiny_model, dataset, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.testing.tiny_model import MAPPING

    out = tmp_path / "out"
    cfg = base_config(tiny_model, dataset("completion"), checkpoint={"uri": f"file://{tmp_path}/ckpt"},
                      output={"uri": f"file://{out}", "merge": True},
                      evaluation={"testSplit": 0.1, "metrics": ["exactMatch", "tokenF1"], "maxSamples": 12,
                                  "generation": {"maxNewTokens": 4}})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    assert result["reason"] == "Completed" and result["step"] == 40 and result["totalSteps"] == 40
    assert result["output"] == {"adapterUri": f"file://{out}/adapter", "mergedUri": f"file://{out}/merged", "reportUri": f"file://{out}/report.html"}
    assert (out / "merged" / "README.md").read_text().startswith("---\nbase_model: ")
    assert result["checkpoint"] == {"uri": f"file://{tmp_path}/ckpt/step-00000040", "step": 40}

    summary = json.loads((out / "metrics.json").read_text())
    losses = [h["trainLoss"] for h in summary["history"] if "trainLoss" in h]
    assert losses[-1] < 0.25 * losses[0], losses
    base, final = summary["base"]["evalLoss"], summary["final"]["evalLoss"]
    assert final < 0.25 * base, (base, final)
    assert summary["final"]["perplexity"] < summary["base"]["perplexity"]
    assert summary["final"]["exactMatch"] > summary["base"]["exactMatch"]
    assert summary["evaluation"]["metrics"]["exactMatch"]["better"] is True
    assert result["evaluation"]["primary"] == "exactMatch" and result["evaluation"]["testRows"] == 12
    assert summary["data"]["truncated"] == 0 and summary["data"]["format"] == "completion"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # loss, eval loss, lr curves
    assert (out / "report.md").is_file()

    # The adapter reloads onto the base with PEFT, merges, and answers the task.
    tok = AutoTokenizer.from_pretrained(out / "adapter")
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    merged = PeftModel.from_pretrained(base_model, out / "adapter").merge_and_unload()
    saved_merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    right = 0
    for key, value in list(MAPPING.items())[:8]:
        enc = tok(f"Translate {key}.", return_tensors="pt")
        gen = merged.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        gen2 = saved_merged.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
        assert gen.tolist() == gen2.tolist()  # the uploaded merged model is the same model
        right += tok.decode(gen[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip() == value
    assert right >= 6, right


@pytest.mark.parametrize("packing", [True, False])
def test_packing(packing, tiny_model, dataset, tmp_path, monkeypatch):
    cfg = base_config(tiny_model, dataset("text", 256), dataset={"packing": packing, "evalSplit": None, "maxSeqLength": 64},
                      training={"maxSteps": 15, "batchSize": 4})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((output_dir(cfg) / "metrics.json").read_text())
    padding = summary["train"]["paddingFraction"]
    if packing:
        assert padding == 0.0  # bfd packing is padding-free
    else:
        assert padding > 0.05  # variable-length rows padded per batch
    losses = [h["trainLoss"] for h in summary["history"] if "trainLoss" in h]
    assert losses[-1] < losses[0]


def test_qlora_trains_and_adapter_loads_on_full_precision_base(tiny_model, dataset, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.config import parse_config
    from kubetune_trainer.model_loading import load_model

    cfg = base_config(tiny_model, dataset("completion"), method="qlora",
                      quantization={"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "float32"},
                      training={"maxSteps": 30}, output={"uri": f"file://{tmp_path}/out"})
    # The base really is 4-bit nf4 (bitsandbytes on CPU).
    model = load_model(tiny_model, parse_config(cfg), precision="fp32")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds, kinds
    del model

    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["final"]["evalLoss"] < 0.5 * summary["base"]["evalLoss"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, tmp_path / "out" / "adapter")
    assert any("lora_A" in n for n, _ in peft.named_parameters())


@pytest.mark.parametrize("fmt", ["chat", "instruction"])
def test_formats_train(fmt, tiny_model, dataset, tmp_path, monkeypatch):
    cfg = base_config(tiny_model, dataset(fmt), training={"maxSteps": 20}, dataset={"format": "auto"})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((output_dir(cfg) / "metrics.json").read_text())
    assert summary["data"]["format"] == fmt
    assert summary["final"]["evalLoss"] < 0.5 * summary["base"]["evalLoss"]


def test_response_only_loss_masks_prompts(tiny_model, dataset, tmp_path):
    """Labels exist only on the answer tokens, for each format that has one."""
    from trl import SFTTrainer

    from kubetune_contract.sections import DatasetSpec
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.data import prepare
    from kubetune_trainer.model_loading import load_model, load_tokenizer
    from kubetune_trainer.recipes.sft import to_sft_config

    for fmt in ("completion", "chat", "instruction"):
        cfg = parse_config(base_config(tiny_model, dataset(fmt, 8, name=f"m-{fmt}.jsonl"), dataset={"evalSplit": None}))
        tok = load_tokenizer(tiny_model, cfg)
        data = prepare(DatasetSpec(trainUri=cfg.dataset.train_uri, maxSeqLength=64), tok, seed=1, cache_dir=tmp_path)
        args = to_sft_config(cfg, output_dir=tmp_path / fmt, has_eval=False,
                             completion_only_loss=True if data.shape == "prompt_completion" else None,
                             assistant_only_loss=data.assistant_only_loss)
        trainer = SFTTrainer(model=load_model(tiny_model, cfg, precision="fp32"), args=args, train_dataset=data.train, processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[0]])
        labels = batch["labels"][0]
        trained = tok.decode(batch["input_ids"][0][labels != -100])
        assert 0 < int((labels != -100).sum()) < len(labels), fmt
        assert "Translate" not in trained and "code" not in trained.lower(), (fmt, trained)


@pytest.mark.parametrize("case", ["missing-column", "empty", "no-weights", "unsupported-file", "unsupported-format", "bad-json-line",
                                  "answers-not-numbers", "test-split-leaves-no-rows"])
def test_bad_input_is_one_line_exit_2_and_reason(case, tiny_model, dataset, tmp_path, monkeypatch, capsys):
    train = dataset("completion", 16)
    over: dict = {}
    rendered_over: dict = {}  # written into the rendered config: what the spec itself would refuse
    expect_reason, expect_text = "InvalidDataset", None
    if case == "missing-column":
        over = {"dataset": {"format": "completion", "columns": {"prompt": "question"}}}
        expect_text = "format completion needs column 'question' (mapped by dataset.columns.prompt); found columns: prompt, completion"
    elif case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        over = {"dataset": {"trainUri": f"file://{tmp_path}/empty.jsonl"}}
        expect_text = "the dataset is empty"
    elif case == "no-weights":
        bare = tmp_path / "bare-model"
        bare.mkdir()
        (bare / "config.json").write_text((tiny_model / "config.json").read_text())
        over = {"model": {"uri": f"file://{bare}"}}
        expect_reason, expect_text = "InvalidModel", "no weights in"
    elif case == "unsupported-file":
        (tmp_path / "train.txt").write_text("hello\n")
        over = {"dataset": {"trainUri": f"file://{tmp_path}/train.txt"}}
        expect_text = "unsupported file type '.txt'; use .jsonl, .json, .csv, .parquet or a saved datasets directory"
    elif case == "unsupported-format":
        rendered_over = {"format": "alpaca"}
        expect_reason, expect_text = "InvalidConfig", ("dataset.format: Input should be 'auto', 'instruction', 'chat', 'completion', 'text', "
                                                      "'preference', 'unpaired' or 'prompts'")
    elif case == "bad-json-line":
        train.write_text(train.read_text() + "{not json\n")
        expect_text = f"{train}:17: not valid JSON"
    elif case == "answers-not-numbers":  # the lookup task answers with words; the trainer's pre-flight, before any step
        first = json.loads(train.read_text().splitlines()[0])
        over = {"evaluation": {"testSplit": 0.2, "metrics": ["mae"]}}
        expect_text = f"file://{train}:1: evaluation.metrics mae needs a number in every answer: the answer {first['completion']!r} has none"
    elif case == "test-split-leaves-no-rows":
        over = {"evaluation": {"testSplit": 0.01}}
        expect_text = "evaluation.testSplit 0.01 of 16 usable rows leaves no test rows; raise it to at least 0.062 or set evaluation.testUri"

    from kubetune_trainer.__main__ import main
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.errors import InvalidConfig

    cfg = base_config(tiny_model, train, **over)
    cfg["dataset"].update(rendered_over)
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "termination.json"))
    try:
        code = main(parse_config(cfg))
    except InvalidConfig as exc:  # parse() rejects it before main; the CLI path is tested in test_resilience
        assert expect_reason == "InvalidConfig" and expect_text in str(exc) and "\n" not in str(exc)
        return
    assert code == 2
    result = json.loads((tmp_path / "termination.json").read_text())
    assert result["reason"] == expect_reason and expect_text in result["message"], result
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("kubetune-train:")]
    assert last == [f"kubetune-train: {expect_reason}: {result['message']}"]


def test_s3_dataset_problems_name_the_uri_not_the_download_cache(minio, bucket, tmp_path):
    from kubetune_trainer.data.read import load_table
    from kubetune_trainer.errors import InvalidDataset

    client = minio.client()
    client.put_object(Bucket=bucket, Key="data/bad.jsonl", Body=b'{"text": "fine"}\n{not json\n')
    cache = tmp_path / "cache"
    with pytest.raises(InvalidDataset) as missing:
        load_table(f"s3://{bucket}/data/missing.jsonl", cache)
    assert str(missing.value).startswith(f"s3://{bucket}/data/missing.jsonl: no such object")
    with pytest.raises(InvalidDataset) as bad:
        load_table(f"s3://{bucket}/data/bad.jsonl", cache)
    assert str(bad.value).startswith(f"s3://{bucket}/data/bad.jsonl:2: not valid JSON")
    assert str(cache) not in str(missing.value) + str(bad.value)


def test_s3_answers_without_numbers_are_refused_naming_the_uri_and_line(minio, bucket, tmp_path):
    """The trainer's pre-flight for remote data: a numeric metric on an s3:// dataset
    whose answer on line 3 is not a number, refused before any model is loaded."""
    from kubetune_contract.sections import EvaluationSpec
    from kubetune_trainer.data.read import load_table
    from kubetune_trainer.errors import InvalidDataset
    from kubetune_trainer.data.preflight import check_answers

    rows = [{"prompt": "a", "completion": " 12"}, {"prompt": "b", "completion": " 7"}, {"prompt": "c", "completion": " twelve"}]
    minio.client().put_object(Bucket=bucket, Key="data/priced.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    uri, cache = f"s3://{bucket}/data/priced.jsonl", tmp_path / "cache"
    with pytest.raises(InvalidDataset) as refused:
        check_answers(load_table(uri, cache), "completion", None, EvaluationSpec(testSplit=0.3, metrics=["mae"]), uri, cache)
    assert str(refused.value) == f"{uri}:3: evaluation.metrics mae needs a number in every answer: the answer ' twelve' has none"
