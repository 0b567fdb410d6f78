"""The trainer in-process on the tiny model: LoRA, packing, QLoRA, formats, outputs.

In-process (main(cfg)) saves the ~8 s of imports a subprocess pays; the
process-level behaviours (kill -9, SIGTERM, torchrun, outages) are in
test_resilience.py and test_distributed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import base_config

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
                      evaluation={"generateSamples": 12, "maxNewTokens": 4})
    code, result, _ = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    assert result["reason"] == "Completed" and result["step"] == 40 and result["totalSteps"] == 40
    assert result["output"] == {"adapterUri": f"file://{out}/adapter", "mergedUri": f"file://{out}/merged", "reportUri": f"file://{out}/report.html"}
    assert result["checkpoint"] == {"uri": f"file://{tmp_path}/ckpt/step-00000040", "step": 40}

    summary = json.loads((out / "metrics.json").read_text())
    losses = [h["trainLoss"] for h in summary["history"] if "trainLoss" in h]
    assert losses[-1] < 0.25 * losses[0], losses
    base, final = summary["base"]["evalLoss"], summary["final"]["evalLoss"]
    assert final < 0.25 * base, (base, final)
    assert summary["final"]["perplexity"] < summary["base"]["perplexity"]
    assert summary["final"]["task"]["exactMatch"] > summary["base"]["task"]["exactMatch"]
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
    cfg = base_config(tiny_model, dataset("text", 256), data={"packing": packing, "evalSplit": None, "maxSeqLength": 64},
                      training={"maxSteps": 15, "batchSize": 4})
    code, result, wd = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((wd / "work" / "output" / "metrics.json").read_text())
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
    cfg = base_config(tiny_model, dataset(fmt), training={"maxSteps": 20}, data={"format": "auto"})
    code, result, wd = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    summary = json.loads((wd / "work" / "output" / "metrics.json").read_text())
    assert summary["data"]["format"] == fmt
    assert summary["final"]["evalLoss"] < 0.5 * summary["base"]["evalLoss"]


def test_response_only_loss_masks_prompts(tiny_model, dataset, tmp_path):
    """Labels exist only on the answer tokens, for each format that has one."""
    from trl import SFTTrainer

    from kubetune_trainer.config import DataConfig, parse_config
    from kubetune_trainer.data import prepare
    from kubetune_trainer.model_loading import load_model, load_tokenizer
    from kubetune_trainer.translate import to_sft_config

    for fmt in ("completion", "chat", "instruction"):
        cfg = parse_config(base_config(tiny_model, dataset(fmt, 8, name=f"m-{fmt}.jsonl"), data={"evalSplit": None}))
        tok = load_tokenizer(tiny_model, cfg)
        data = prepare(DataConfig(trainUri=cfg.data.train_uri, maxSeqLength=64), tok, seed=1, cache_dir=tmp_path)
        args = to_sft_config(cfg, output_dir=tmp_path / fmt, has_eval=False,
                             completion_only_loss=True if data.shape == "prompt_completion" else None,
                             assistant_only_loss=data.assistant_only_loss)
        trainer = SFTTrainer(model=load_model(tiny_model, cfg, precision="fp32"), args=args, train_dataset=data.train, processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[0]])
        labels = batch["labels"][0]
        trained = tok.decode(batch["input_ids"][0][labels != -100])
        assert 0 < int((labels != -100).sum()) < len(labels), fmt
        assert "Translate" not in trained and "code" not in trained.lower(), (fmt, trained)
