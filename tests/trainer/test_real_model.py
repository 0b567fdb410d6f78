"""The lifecycle on the real model, SmolLM2-135M-Instruct (the `real_model`
fixture: the PyPI package's GGUF file and the directory made from it), on CPU.

A real-model training costs minutes here, so each runs once per module and
several tests read it:
- `meetings_run`: the meetings task (examples/meetings, the demo's) with
  model.uri naming the package's .gguf file itself: SFT + LoRA, exported as
  adapter, merged, GGUF q8_0 and an Ollama Modelfile. It is the GGUF base's
  test, the "tuned beats base" test and the exports' source (q4_k_m is made
  from its merged model by the exporter's own converter and quantizer);
- `price_run`: examples/price-prediction (numeric, judged by MAE in dollars against
  the base and three classical baselines, top-3 numeric decoding);
- `dpo_run`: DPO on the meetings task's preference pairs.
Generation sets are small (greedy, a few tokens): generation is the slow part.
Serving the real model with vLLM through the operator: tests/cluster/test_real_model_serving.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from .helpers import REPO, load_script, render_config, train_in_process

pytestmark = [pytest.mark.trainer, pytest.mark.slow]

MEETINGS = REPO / "examples" / "meetings"
PRICE = REPO / "examples" / "price-prediction"
GO_RENDER = REPO / "tests/trainer/gotemplate/render.go"
# Exact match on 24 held-out messages, tuned minus base. Measured (20:07, 16 steps,
# GGUF base): base 0.0 % (it repeats the message), tuned 100.0 %; token F1 5.9 % ->
# 100.0 %. A margin of 0.6 leaves room for CPU nondeterminism and still fails a run
# whose adapter learnt the form but not the reading (the day a meeting moved from,
# the room).
MEETINGS_MARGIN = 0.6
# Greedy answers of llama.cpp on the GGUF exports that equal the merged HF
# model's, over the prompts below. Measured: q8_0 8/8, q4_k_m 8/8; q4_k_m's floor
# leaves room for 4-bit rounding flipping a near-tie.
MIN_AGREEMENT = {"q8_0": 1.0, "q4_k_m": 0.75}
AGREEMENT_PROMPTS = 8
# Held-out preference accuracy, tuned minus base, 40 pairs. Measured (16 DPO steps):
# base 85.0 % (SmolLM2 already prefers the right answer most of the time), tuned
# 97.5 %. 0.05 is two pairs: above noise, below the measured 0.125.
DPO_MARGIN = 0.05
CONVERSATIONS = [
    [{"role": "user", "content": "When is the retro?"}],  # SmolLM2's template adds its default system turn
    [{"role": "system", "content": "Reply with the day only."}, {"role": "user", "content": "Standup on Monday, room A1."},
     {"role": "assistant", "content": "Monday"}, {"role": "user", "content": "And the retro on Friday?"}],
    [{"role": "user", "content": "Book room C4."}, {"role": "assistant", "content": "Booked: room C4."}],
]


def run_in_process(cfg: dict, root: Path) -> SimpleNamespace:
    code, result = train_in_process(cfg, root)
    assert code == 0 and result["reason"] == "Completed", result
    out = root / "output"
    return SimpleNamespace(root=root, cfg=cfg, result=result, out=out, summary=json.loads((out / "metrics.json").read_text()))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- meetings (SFT on the GGUF base)


def meetings_spec(model_uri: str, data: Path, root: Path) -> dict:
    return {
        "model": {"uri": model_uri},
        "dataset": {"trainUri": f"file://{data}", "maxSeqLength": 96},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"maxSteps": 16, "learningRate": 0.001, "batchSize": 8, "gradientAccumulationSteps": 1,
                     "gradientCheckpointing": False, "warmupRatio": 0.0, "logEverySteps": 4, "seed": 7},
        "resources": {"gpusPerNode": 0},
        "checkpoint": {"uri": f"file://{root}/checkpoints", "everySteps": 1000},
        "output": {"uri": f"file://{root}/output", "formats": ["adapter", "merged", "gguf", "ollama"], "gguf": {"quantization": "q8_0"}},
        "evaluation": {"testSplit": 0.1, "metrics": ["exactMatch", "tokenF1"], "maxSamples": 24, "generation": {"maxNewTokens": 12}},
    }


@pytest.fixture(scope="module")
def meetings_run(real_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("meetings")
    data = write_jsonl(root / "meetings.jsonl", load_script(MEETINGS / "generate.py", "meetings_generator").make_rows(260, seed=0))
    uri = f"file://{real_model.gguf}"
    return run_in_process(render_config(meetings_spec(uri, data, root), root, name="meetings"), root)


def test_sft_lora_on_the_gguf_base_beats_the_base_model_on_held_out_messages(meetings_run, real_model):
    run = meetings_run
    assert run.summary["model"] == f"file://{real_model.gguf}"
    data = run.summary["data"]
    assert data["testRows"] >= 24 and data["testRowsSeenInTraining"] == 0, data
    ev = run.summary["evaluation"]["metrics"]
    em, f1 = ev["exactMatch"], ev["tokenF1"]
    print(f"\nmeetings on SmolLM2 (GGUF base, 16 LoRA steps): exact match base {em['base']:.1%}, tuned {em['tuned']:.1%}; "
          f"token F1 base {f1['base']:.1%}, tuned {f1['tuned']:.1%}; train {run.summary['train']['seconds']:.0f} s, "
          f"{run.summary['train']['tokensPerSecond']:.0f} tokens/s")
    assert em["tuned"] - em["base"] >= MEETINGS_MARGIN, em
    assert f1["tuned"] > f1["base"], f1
    assert run.result["evaluation"]["verdict"].startswith("tuned beats base on exact match"), run.result["evaluation"]


def test_the_adapter_and_its_card_name_the_gguf_the_user_gave(meetings_run, real_model):
    uri = f"file://{real_model.gguf}"
    adapter = meetings_run.out / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == uri
    for card in (adapter / "README.md", meetings_run.out / "merged" / "README.md"):
        text = card.read_text()
        assert f"base_model: {uri}\n" in text and f"`{uri}` (a GGUF file, dequantised to fp32 to train on)" in text, card


def _hf_answers(model_dir: Path, prompts: list[str]) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            seq = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(seq[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def _llama_cpp_answers(gguf: Path, prompts: list[str], hf_ids: list[list[int]]) -> list[str]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False, seed=0)
    out = []
    for prompt, ids in zip(prompts, hf_ids):
        # llama.cpp's own tokenizer (the converter recognised SmolLM2's) reads the chat prompt as transformers does.
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids, prompt
        out.append(llm(prompt, max_tokens=12, temperature=0)["choices"][0]["text"])
    return out


def test_gguf_q8_0_and_q4_k_m_answer_as_the_merged_model_in_llama_cpp(meetings_run, tmp_path):
    from transformers import AutoTokenizer

    from kubetune_trainer.exporters import gguf as exporter

    merged = meetings_run.out / "merged"
    q8 = meetings_run.out / "gguf" / "model-q8_0.gguf"
    f16, q4 = tmp_path / "f16.gguf", tmp_path / "model-q4_k_m.gguf"
    exporter.convert(merged, f16, "f16")  # what output.gguf.quantization q4_k_m runs
    exporter.quantize(f16, q4, "q4_k_m")
    tokenizer = AutoTokenizer.from_pretrained(merged)
    rows = [json.loads(line) for line in (meetings_run.out / "predictions.jsonl").read_text().splitlines()][:AGREEMENT_PROMPTS]
    system = load_script(MEETINGS / "generate.py", "meetings_generator").SYSTEM
    prompts = [tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": r["prompt"]}],
                                             tokenize=False, add_generation_prompt=True) for r in rows]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    expected = _hf_answers(merged, prompts)
    rates = {}
    for name, path in (("q8_0", q8), ("q4_k_m", q4)):
        answers = _llama_cpp_answers(path, prompts, ids)
        rates[name] = sum(a.strip() == e.strip() for a, e in zip(answers, expected)) / len(prompts)
        print(f"\n{name} ({path.stat().st_size / 1e6:.0f} MB): {rates[name]:.0%} of {len(prompts)} greedy answers equal the merged "
              f"HF model's; first: {answers[0]!r} vs {expected[0]!r}")
    assert all(e == r["tuned"] for e, r in zip(expected, rows)), "the merged model answers as the evaluated adapter did"
    assert all(rates[name] >= floor for name, floor in MIN_AGREEMENT.items()), rates


def test_the_modelfile_template_rendered_by_go_equals_smollm2_s_chat_template(meetings_run, real_model):
    from transformers import AutoTokenizer

    modelfile = (meetings_run.out / "gguf" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile, modelfile
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    rendered = json.loads(subprocess.run(["go", "run", str(GO_RENDER)], input=json.dumps({"template": template, "conversations": CONVERSATIONS}),
                                         capture_output=True, text=True, check=True, timeout=300).stdout)
    tokenizer = AutoTokenizer.from_pretrained(real_model.hf)  # the model's own chat template, as the package's GGUF carries it
    expected = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=c[-1]["role"] != "assistant") for c in CONVERSATIONS]
    assert rendered == expected
    assert "You are a helpful AI assistant named SmolLM" in rendered[0] and "named SmolLM" not in rendered[1]


# --------------------------------------------------------------------------- price prediction


# What changes from examples/price-prediction/job.yaml for 2 CPU cores, and why.
PRICE_CPU = {
    "method": "lora",  # bitsandbytes' 4-bit kernels on CPU are ~10x slower; QLoRA itself: test_train.py
    "training": {"maxSteps": 60, "learningRate": 0.001, "warmupRatio": 0.05, "evalEverySteps": 30, "logEverySteps": 10,
                 "batchSize": 8, "gradientCheckpointing": False},  # 480 rows: the training rows once
    "resources": {"gpusPerNode": 0},
    "evaluation": {"maxSamples": 40},
}
PRICE_ROWS = 600
# Measured (22:26, 60 LoRA steps, 40 held-out rows): MAE base 168, tuned 50.0 (0.30x the base), the mean
# baseline 122 (tuned 0.41x it), linear 28.7, random forest 6.77; parse rate base 100 %, tuned 100 %.
# The bars leave room for CPU nondeterminism and still fail a run that learnt the form but not the prices.
PRICE_MAX_OF_BASE = 0.6
PRICE_MAX_OF_MEAN = 0.75
PRICE_MIN_PARSE = 0.95


@pytest.fixture(scope="module")
def price_run(real_model, tmp_path_factory):
    """examples/price-prediction/job.yaml on SmolLM2 (PRICE_CPU), its own generator's rows, trained and evaluated once."""
    root = tmp_path_factory.mktemp("price-real")
    data = write_jsonl(root / "train.jsonl", load_script(PRICE / "generate.py", "price_generator").make_rows(PRICE_ROWS, seed=0))
    spec = yaml.safe_load((PRICE / "job.yaml").read_text())["spec"]
    spec["model"] = {"uri": f"file://{real_model.hf}"}
    spec["dataset"]["trainUri"] = f"file://{data}"
    spec["training"].pop("epochs")
    for key, value in PRICE_CPU.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    spec["checkpoint"] = {"uri": f"file://{root}/checkpoints", "everySteps": 1000}
    spec["output"] = {"uri": f"file://{root}/output"}
    return run_in_process(render_config(spec, root, name="price-prediction"), root)


def test_smollm2_splits_prices_into_digits_and_the_decoder_reads_them_whole(real_model):
    from transformers import AutoTokenizer

    from kubetune_trainer.evaluation.numeric import number_start_ids

    tokenizer = AutoTokenizer.from_pretrained(real_model.hf)
    # The completion " 677" is a bare space token, then one token per digit: the decoder's
    # answer position is after the space, and a price is as many tokens as it has digits.
    assert tokenizer.tokenize(" 677") == ["Ġ", "6", "7", "7"] and tokenizer.tokenize(" 1250") == ["Ġ", "1", "2", "5", "0"]
    starts = {tokenizer.convert_ids_to_tokens(i) for i in number_start_ids(tokenizer)}
    assert {str(d) for d in range(10)} <= starts and "Ġ" not in starts, starts


def test_price_example_on_the_real_model_beats_its_base_and_reports_the_baselines(price_run):
    ev = price_run.summary["evaluation"]
    mae, baselines, parse = ev["metrics"]["mae"], ev["baselines"], ev["parseRate"]
    seconds, train = ev["seconds"], price_run.summary["train"]["seconds"]
    print(f"\nprice prediction on SmolLM2 ({ev['testRows']} held-out rows): MAE base {mae['base']:.1f}, tuned {mae['tuned']:.1f}, "
          f"baselines {json.dumps({k: round(v['mae'], 1) for k, v in baselines.items()})}; parse rate {json.dumps(parse)}; "
          f"train {train:.0f} s ({price_run.summary['train']['tokensPerSecond']:.0f} tokens/s), "
          f"evaluation base {seconds.get('base', 0):.1f} s + tuned {seconds.get('tuned', 0):.1f} s "
          f"({(seconds.get('base', 0) + seconds.get('tuned', 0)) / train:.2f}x training)")
    print((price_run.out / "report.md").read_text())
    for row in [json.loads(line) for line in (price_run.out / "predictions.jsonl").read_text().splitlines()][:3]:
        print(f"  {row['prompt']!r} -> {row['reference']!r}: base {row['base']!r} ({row['baseNumber']}), "
              f"tuned {row['tuned']!r} ({row['tunedNumber']})")
    assert set(baselines) == {"mean", "linear", "randomForest"}
    # The generator draws from 6,912 descriptions: 2 of the 40 test prompts also occur in training (the report says so).
    assert ev["testRows"] == 40 and price_run.summary["data"]["testRowsSeenInTraining"] <= 4, price_run.summary["data"]
    assert mae["tuned"] <= PRICE_MAX_OF_BASE * mae["base"], mae
    assert mae["tuned"] <= PRICE_MAX_OF_MEAN * baselines["mean"]["mae"], (mae, baselines)
    assert parse["tuned"] >= PRICE_MIN_PARSE, parse


# --------------------------------------------------------------------------- DPO


def held_out_pairs(train: list[dict], n: int, seed: int) -> list[dict]:
    """n preference pairs whose message and both answers appear nowhere in `train`."""
    gen = load_script(MEETINGS / "generate.py", "meetings_generator")
    seen = {t["content"] for r in train for t in (*r["prompt"], *r["chosen"], *r["rejected"])}
    fresh = [r for r in gen.make_preference_rows(8 * n, seed=seed)
             if not {r["prompt"][1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]} & seen]
    assert len(fresh) >= n, len(fresh)
    return fresh[:n]


@pytest.fixture(scope="module")
def dpo_run(real_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo-real")
    train = load_script(MEETINGS / "generate.py", "meetings_generator").make_preference_rows(160, seed=3)
    data, test = write_jsonl(root / "pairs.jsonl", train), write_jsonl(root / "test.jsonl", held_out_pairs(train, 40, seed=4))
    spec = {
        "model": {"uri": f"file://{real_model.hf}"},
        "dataset": {"trainUri": f"file://{data}", "maxSeqLength": 96},
        "objective": "dpo",
        "preference": {"beta": 0.1},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"maxSteps": 16, "learningRate": 0.0005, "batchSize": 4, "gradientAccumulationSteps": 1,
                     "gradientCheckpointing": False, "warmupRatio": 0.0, "logEverySteps": 4, "seed": 7},
        "resources": {"gpusPerNode": 0},
        "checkpoint": {"uri": f"file://{root}/checkpoints", "everySteps": 1000},
        "output": {"uri": f"file://{root}/output"},
        "evaluation": {"testUri": f"file://{test}", "metrics": ["preferenceAccuracy"]},
    }
    return run_in_process(render_config(spec, root, name="dpo"), root)


def _rows(uri: str) -> list[dict]:
    return [json.loads(line) for line in Path(uri.removeprefix("file://")).read_text().splitlines()]


def test_dpo_raises_held_out_preference_accuracy_over_the_base(dpo_run):
    train, test = _rows(dpo_run.cfg["dataset"]["trainUri"]), _rows(dpo_run.cfg["evaluation"]["testUri"])
    # Held out: no test message, chosen or rejected answer was ever in a training pair.
    seen = {t["content"] for r in train for t in (*r["prompt"], *r["chosen"], *r["rejected"])}
    assert not {t["content"] for r in test for t in (r["prompt"][1], *r["chosen"], *r["rejected"])} & seen
    # Nothing on the surface tells chosen from rejected: the same form, one part changed, as often longer as shorter.
    for rows in (train, test):
        longer = sum(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in rows) / len(rows)
        shorter = sum(len(r["chosen"][0]["content"]) < len(r["rejected"][0]["content"]) for r in rows) / len(rows)
        assert longer < 0.3 and shorter < 0.3, (longer, shorter)
    data = dpo_run.summary["data"]
    assert data["testRows"] == len(test) and data["testRowsSeenInTraining"] == 0, data
    acc = dpo_run.summary["evaluation"]["metrics"]["preferenceAccuracy"]
    print(f"\nDPO on SmolLM2, {data['testRows']} held-out pairs: preference accuracy base {acc['base']:.1%}, tuned {acc['tuned']:.1%}; "
          f"train {dpo_run.summary['train']['seconds']:.0f} s")
    assert acc["tuned"] - acc["base"] >= DPO_MARGIN, acc
