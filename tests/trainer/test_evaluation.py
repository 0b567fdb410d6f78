"""Evaluation end to end on tiny models (CPU): the price-prediction example at
tiny scale (a numeric task judged by MAE against the base model and the
baselines on held-out rows), what it leaves behind (predictions, the report in
headless Chromium, the model card, an adapter another process loads with
PEFT), `kubetune eval` on its output in S3, and keepBest + early stopping on
a run made to overfit. (`kubetune generate --job`: tests/cluster/test_evaluation.py.)

The example runs once per module (`price_run`); the tests read its outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from .helpers import REPO, base_config, load_script, render_config, train_in_process

pytestmark = pytest.mark.trainer

EXAMPLE = REPO / "examples" / "price-prediction"
# Tiny scale for CPU: what changes from examples/price-prediction/job.yaml, and why.
TINY = {
    "method": "lora",  # bitsandbytes' 4-bit kernels on CPU are ~10x slower; QLoRA itself: test_train.py
    "training": {"maxSteps": 200, "learningRate": 0.003, "warmupRatio": 0.05, "evalEverySteps": 40, "logEverySteps": 10,
                 "gradientCheckpointing": False},
    "resources": {"gpusPerNode": 0},
    # What a sweep judging by MAE asks of each trial: the same metric on the validation rows.
    "evaluation": {"validationMetrics": ["mae"]},
}


def load_generator():
    return load_script(EXAMPLE / "generate.py", "price_generator")


@pytest.fixture(scope="module")
def price_run(tmp_path_factory):
    """examples/price-prediction/job.yaml as written, at tiny scale (TINY): its own
    generator's data, a tiny model whose tokenizer splits digits (every price is
    several tokens), trained and evaluated once."""
    from kubetune_trainer.testing.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("price")
    gen = load_generator()
    model = make_tiny_model(root / "model", corpus=gen.corpus(), split_digits=True)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in gen.make_rows(600, seed=0)))
    spec = yaml.safe_load((EXAMPLE / "job.yaml").read_text())["spec"]
    spec["model"] = {"uri": f"file://{model}"}
    spec["dataset"]["trainUri"] = f"file://{data}"
    spec["training"].pop("epochs")
    for key, value in TINY.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    spec["checkpoint"] = {"uri": f"file://{root}/checkpoints", "everySteps": 1000}
    spec["output"] = {"uri": f"file://{root}/output"}
    cfg = render_config(spec, root, name="price-prediction")
    code, result = train_in_process(cfg, root)
    out = root / "output"
    return SimpleNamespace(root=root, cfg=cfg, code=code, result=result, out=out, model=model, data=data,
                           summary=json.loads((out / "metrics.json").read_text()) if code == 0 else None)


def test_price_example_beats_the_mean_baseline_and_the_base_model_on_held_out_rows(price_run):
    assert price_run.code == 0, price_run.result
    ev = price_run.summary["evaluation"]
    mae, baselines = ev["metrics"]["mae"], ev["baselines"]
    print(f"\nprice example (tiny, CPU), {ev['testRows']} held-out rows: MAE base {mae['base']:.1f}, tuned {mae['tuned']:.1f}; "
          + ", ".join(f"{b} {s['mae']:.1f}" for b, s in baselines.items()) + f"; parse rate {ev['parseRate']}; {ev['verdict']}")
    assert mae["tuned"] < baselines["mean"]["mae"] and mae["tuned"] < mae["base"], ev
    assert mae["better"] is True and ev["primary"] == "mae"
    # Held out: the test rows are neither trained on nor used for validation.
    data = price_run.summary["data"]
    assert data["testRows"] == ev["testRows"] == 60 and data["trainRows"] + data["evalRows"] + data["testRows"] == 600
    assert ev["parseRate"]["tuned"] >= 0.9
    # The termination message carries what status.evaluation is made of.
    compact = price_run.result["evaluation"]
    assert compact["metrics"]["mae"] == {"base": mae["base"], "tuned": mae["tuned"]} and compact["fit"]["reason"] in ("Good", "Overfitting")
    # validationMetrics: the tuned model's MAE on the validation rows, apart from the test rows' (what a sweep chooses by).
    on_validation = ev["validation"]["mae"]
    assert 0 < on_validation < baselines["mean"]["mae"] and on_validation != mae["tuned"], ev["validation"]
    assert compact["validation"] == {"mae": on_validation}
    # And every validation loss measured during training (what a sweep prunes by), as the report's curve has it.
    evaluated = [[h["step"], round(h["evalLoss"], 6)] for h in price_run.summary["history"] if "evalLoss" in h and h["step"] > 0]
    assert price_run.result["evalCurve"] == evaluated and [s for s, _ in evaluated] == [40, 80, 120, 160, 200], evaluated


def test_predictions_file_has_every_test_row_base_and_tuned(price_run):
    rows = [json.loads(line) for line in (price_run.out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == price_run.summary["evaluation"]["testRows"]
    first = rows[0]
    assert set(first) == {"index", "prompt", "reference", "base", "tuned", "referenceNumber", "baseNumber", "tunedNumber"}
    assert first["prompt"].startswith("Product: ") and first["referenceNumber"] == float(first["reference"])
    from kubetune_trainer.evaluation.scoring import mae

    tuned = [r["tunedNumber"] if r["tunedNumber"] is not None else None for r in rows]
    mean = price_run.summary["evaluation"]["baselines"]["mean"]["mae"]  # scored on the same rows
    assert all(t is not None for t in tuned[:5])
    assert mae([t if t is not None else 0 for t in tuned], [r["referenceNumber"] for r in rows]) < mean


def test_report_reads_in_words_verdict_first(price_run):
    md = (price_run.out / "report.md").read_text()
    import re

    lines = [line for line in md.splitlines() if line.strip()]
    assert lines[0] == "# Fine-tuning report: test/price-prediction"
    assert lines[1].startswith("**tuned beats base on mean absolute error by ")  # the verdict first
    assert "| mean absolute error (lower is better) | test |" in md and "| mean baseline |" in md
    assert "5 test rows side by side" in md and "![training and validation loss](report-charts/" in md
    body = md.split("## Resolved config")[0]  # the config block shows the config's own keys
    assert "None" not in body
    labels = [row.split("|")[1].strip() for row in body.splitlines() if row.startswith("| ") and not row.startswith("| ---")]
    camel = [label for label in labels if re.search(r"[a-z][A-Z]", label) and not label.startswith("Product:")]
    assert labels and not camel, camel


def test_report_opens_in_headless_chromium_with_every_chart(price_run, tmp_path):
    from tests.harness.browser import open_page

    shot = tmp_path / "report.png"
    page = open_page(price_run.out / "report.html", shot)
    assert page["verdict"].startswith("tuned beats base on mean absolute error")
    assert len(page["images"]) == 4, page  # losses, learning rate, gradient norm, throughput
    assert all(img["complete"] and img["naturalWidth"] > 100 for img in page["images"]), page["images"]
    assert shot.stat().st_size > 20_000
    assert page["tables"] >= 4 and "mean absolute error (lower is better)" in page["text"]


def test_model_card_and_adapter_config_name_the_base_as_the_user_does(price_run):
    from huggingface_hub import ModelCard

    adapter = price_run.out / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == price_run.cfg["model"]["uri"]  # not the pod's cache path
    card = ModelCard.load(adapter / "README.md")
    assert card.data.base_model == price_run.cfg["model"]["uri"] and card.data.library_name == "peft"
    assert {"kubetune", "lora", "peft"} <= set(card.data.tags)
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["mae"] == pytest.approx(price_run.summary["evaluation"]["metrics"]["mae"]["tuned"], rel=1e-5)
    assert "evalLoss" not in results  # validation steered training: not a held-out result
    assert price_run.summary["data"]["sha256"] in card.text and "learning rate" in card.text


def test_adapter_loads_with_peft_in_a_process_that_only_has_the_base_model(price_run):
    """Another tool's view: only the base model directory and the adapter; the
    adapter answers the first test row as the run's tuned model did."""
    first = json.loads((price_run.out / "predictions.jsonl").read_text().splitlines()[0])
    script = (
        "import sys, torch\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "base, adapter, prompt = sys.argv[1:4]\n"
        "tok = AutoTokenizer.from_pretrained(adapter)\n"
        "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()\n"
        "ids = tok(prompt, return_tensors='pt')\n"
        "out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)\n"
        "print('ANSWER=' + tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(price_run.model), str(price_run.out / "adapter"), first["prompt"]],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    answer = next(line for line in done.stdout.splitlines() if line.startswith("ANSWER=")).removeprefix("ANSWER=")
    assert answer == first["tuned"]


def test_kubetune_eval_on_an_s3_output_reproduces_the_runs_evaluation(price_run, tmp_path, minio, bucket):
    """The job's manifest and its output, uploaded to S3 (kubetune generate --job
    reads an s3:// output in tests/cluster/test_evaluation.py)."""
    client = minio.client()
    for path in (price_run.out / "adapter").rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"output/adapter/{path.relative_to(price_run.out / 'adapter')}")
    doc = yaml.safe_load((EXAMPLE / "job.yaml").read_text())
    doc["spec"]["method"] = TINY["method"]
    doc["spec"]["model"] = {"uri": price_run.cfg["model"]["uri"]}
    doc["spec"]["dataset"]["trainUri"] = price_run.cfg["dataset"]["trainUri"]
    doc["spec"]["training"] = {**doc["spec"]["training"], **TINY["training"]}
    doc["spec"]["training"].pop("epochs")
    doc["spec"]["resources"] = TINY["resources"]
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "kubetune_operator.cli", "eval", str(manifest), "--adapter",
                           f"s3://{bucket}/output/adapter", "--out", str(tmp_path / "eval")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())["evaluation"]
    first = price_run.summary["evaluation"]
    # Same rows, same prompts, same model: the same numbers.
    assert again["testRows"] == first["testRows"]
    assert again["metrics"]["mae"]["tuned"] == pytest.approx(first["metrics"]["mae"]["tuned"], rel=1e-3)
    assert again["metrics"]["mae"]["base"] == pytest.approx(first["metrics"]["mae"]["base"], rel=1e-3)
    assert again["baselines"]["mean"] == pytest.approx(first["baselines"]["mean"])
    assert again["verdict"] in done.stdout.splitlines() and "report: file://" in done.stdout


# --------------------------------------------------------------------------- overfitting, keepBest, early stopping


def test_keep_best_and_early_stopping_on_a_run_made_to_overfit(tiny_model, dataset, tmp_path):
    """24 rows, 40 epochs: every validation key is unseen, so validation loss
    turns up while training loss keeps falling. Early stopping (patience 3)
    ends it; the output is the best checkpoint, which retention (keepLast 1)
    keeps; the Fit diagnosis says Overfitting with the remedy."""
    from safetensors.torch import load_file

    store = tmp_path / "checkpoints"
    cfg = base_config(tiny_model, dataset("completion", 24), dataset={"evalSplit": 0.25},
                      training={"maxSteps": None, "epochs": 40.0, "batchSize": 4, "evalEverySteps": 4, "logEverySteps": 2,
                                "keepBest": True, "earlyStopping": {"patience": 3}},
                      checkpoint={"uri": f"file://{store}", "everySteps": 1000, "keepLast": 1},
                      output={"uri": f"file://{tmp_path}/out"})
    code, result = train_in_process(cfg, tmp_path)
    assert code == 0, result
    best = result["checkpoint"]["best"]
    assert result["step"] < result["totalSteps"], "early stopping ended the run"
    assert best["step"] < result["step"] and best["uri"] == f"file://{store}/step-{best['step']:08d}"
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    val = [(h["step"], h["evalLoss"]) for h in summary["history"] if "evalLoss" in h]
    assert min(val, key=lambda v: v[1])[0] == best["step"] and best["evalLoss"] == pytest.approx(min(v for _, v in val))
    # Retention keeps the last one and never deletes the best.
    assert sorted(p.name for p in store.glob("step-*")) == [f"step-{best['step']:08d}", f"step-{result['step']:08d}"]
    # The exported adapter is the best checkpoint's weights, not the last step's.
    exported = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    at_best = load_file(store / f"step-{best['step']:08d}" / "adapter_model.safetensors")
    at_last = load_file(store / f"step-{result['step']:08d}" / "adapter_model.safetensors")
    assert all((exported[k] == at_best[k]).all() for k in exported)
    assert any((exported[k] != at_last[k]).any() for k in exported)
    assert summary["final"]["evalLoss"] == pytest.approx(best["evalLoss"], rel=1e-4)  # evaluated as the best model
    fit = result["evaluation"]["fit"]
    assert fit["reason"] == "Overfitting", fit
    assert f"lowest at step {best['step']}" in fit["message"] and "lower training.learningRate" in fit["message"]
