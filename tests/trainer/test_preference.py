"""The preference objectives (dpo, orpo, kto) in-process on the tiny model: each
trains on TRL's own trainer, and its own signal moves the right way: the held-out
preference accuracy of the tuned model beats the base model's. Bad preference
data is refused before training with its file and line.

The data (`make_rows("preference")`): a word of the code tongue preferred over
one of the source tongue, every row with words of its own, so the held-out
pairs (the test split, or rows drawn past the training file's) share no prompt
and no answer with the training pairs: a tuned model ranks them right only if
it learnt the preference, not the pairs. A rule of the answer alone (which
syllables it is made of) is what the tiny random-init model can carry over to
words it never saw in a few dozen steps; the real-model DPO check is in
test_real_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import base_config

pytestmark = pytest.mark.trainer

PREFERENCE_EVAL = {"testSplit": 0.15, "metrics": ["preferenceAccuracy"]}
TRAIN_ROWS = 192  # the dataset fixture's default


def held_out(fmt: str, n: int = 48) -> list[dict]:
    """n rows past the training file's (drawn with its seed): none of their
    prompt or answer words is in it."""
    from kubetune_trainer.testing.tiny_model import make_rows

    rows = make_rows(fmt, TRAIN_ROWS + n)
    assert not made_up_words(rows[TRAIN_ROWS:]) & made_up_words(rows[:TRAIN_ROWS])
    return rows[TRAIN_ROWS:]


def made_up_words(rows: list[dict]) -> set[str]:
    """The word each prompt asks about and each answer gives."""
    return {text.split()[-1].strip(".:?") for r in rows for key, text in r.items() if key != "label"}


def assert_rows_share_no_word(path: Path) -> None:
    """Any split of the file (the trainer's testSplit) holds out pairs whose
    prompt and answers never occur in the training part."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(made_up_words(rows)) == 3 * len(rows), "two rows share a word"


def train(cfg: dict, tmp_path: Path, monkeypatch, name: str = "run") -> tuple[int, dict]:
    from kubetune_trainer.__main__ import main
    from kubetune_trainer.config import parse_config

    wd = tmp_path / name
    monkeypatch.setenv("KUBETUNE_WORKDIR", str(wd / "work"))
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(wd / "termination.json"))
    wd.mkdir(parents=True, exist_ok=True)
    code = main(parse_config(cfg))
    return code, json.loads((wd / "termination.json").read_text())


def _accuracy(result: dict) -> tuple[float, float]:
    row = result["evaluation"]["metrics"]["preferenceAccuracy"]
    return row["base"], row["tuned"]


def test_dpo_lora_learns_the_preference_and_the_adapter_reloads(tiny_model, dataset, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.evaluation.preference import pairs_of, preference_accuracy

    out = tmp_path / "out"
    data = dataset("preference")
    assert_rows_share_no_word(data)
    cfg = base_config(tiny_model, data, objective="dpo", preference={"beta": 0.1, "lossType": "sigmoid"},
                      evaluation=PREFERENCE_EVAL, training={"maxSteps": 30}, output={"uri": f"file://{out}"})
    code, result = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    assert result["reason"] == "Completed" and result["step"] == 30
    # 29 held-out pairs; over five data and training seeds: base 0.24-0.52, tuned 0.86-1.0, tuned - base >= 0.48.
    base, tuned = _accuracy(result)
    assert tuned >= base + 0.25 and tuned >= 0.8, (base, tuned)
    assert result["evaluation"]["primary"] == "preferenceAccuracy"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data"]["format"] == "preference" and summary["data"]["longestTokens"] > 0
    assert "perplexity" not in summary["final"]  # the objective's loss is not a language-model loss
    # TRL's own reward logs: the margin widens, the batches rank their pairs right; the report draws both.
    margins = [h["rewardMargin"] for h in summary["history"] if "rewardMargin" in h]
    assert len(margins) >= 5 and margins[-1] > margins[0] + 0.5, margins
    assert summary["train"]["rewardAccuracy"] >= 0.8 and summary["train"]["rewardsChosen"] > summary["train"]["rewardsRejected"]
    report = (out / "report.md").read_text()
    assert "preference rewards" in report and "preference accuracy (training batches)" in report

    # The adapter reloads onto the base with PEFT, ranks pairs of words it never
    # saw as training taught it, and generates.
    tok = AutoTokenizer.from_pretrained(out / "adapter")
    pairs = pairs_of(held_out("preference"))
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model)
    base_accuracy = preference_accuracy(base_model, tok, pairs)
    tuned_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter")
    assert preference_accuracy(tuned_model, tok, pairs) >= max(0.8, base_accuracy + 0.2)
    enc = tok("Translate kaka.", return_tensors="pt")
    gen = tuned_model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc.input_ids.shape[1]


@pytest.mark.parametrize("objective", ["orpo", "kto"])
def test_orpo_and_kto_learn_the_preference(objective, tiny_model, dataset, tmp_path, monkeypatch):
    fmt = "unpaired" if objective == "kto" else "preference"
    evaluation = PREFERENCE_EVAL
    if objective == "kto":
        # Pairs of an unpaired test set are a prompt's desirable and undesirable rows:
        # a test file whose prompts come in such couples (a split would part some).
        test = tmp_path / "kto-test.jsonl"
        test.write_text("".join(json.dumps(r) + "\n" for r in held_out(fmt)))
        evaluation = {"testUri": f"file://{test}", "metrics": ["preferenceAccuracy"]}
    cfg = base_config(tiny_model, dataset(fmt), objective=objective, evaluation=evaluation, training={"maxSteps": 30})
    code, result = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    # Over five seeds: orpo tuned 0.79-0.90 (base 0.24-0.52), kto 0.96-1.0 (base 0.29-0.63); tuned - base >= 0.33.
    base, tuned = _accuracy(result)
    assert tuned >= base + 0.2 and tuned >= 0.75, (objective, base, tuned)


@pytest.mark.parametrize("method", ["qlora", "full"])
def test_dpo_with_qlora_and_full(method, tiny_model, dataset, tmp_path, monkeypatch):
    """QLoRA: the reference is the 4-bit base with the adapter disabled; full: a
    frozen copy of the base, loaded by TRL from the model's path."""
    over: dict = {"output": {"uri": f"file://{tmp_path}/out"}}
    if method == "qlora":
        over["quantization"] = {"bits": 4, "quantType": "nf4", "doubleQuant": True, "computeDtype": "float32"}
    else:
        over.update(lora=None, output={"uri": f"file://{tmp_path}/out", "formats": ["merged"]}, training={"maxSteps": 30, "learningRate": 0.0005})
    cfg = base_config(tiny_model, dataset("preference"), method=method, objective="dpo", evaluation=PREFERENCE_EVAL,
                      **{"training": {"maxSteps": 30}, **over})
    code, result = train(cfg, tmp_path, monkeypatch)
    assert code == 0, result
    base, tuned = _accuracy(result)
    assert tuned >= base + 0.2, (method, base, tuned)  # over five seeds: tuned 0.93-1.0, tuned - base >= 0.48
    kind = "merged" if method == "full" else "adapter"
    assert result["output"][f"{kind}Uri"] == f"file://{tmp_path}/out/{kind}"


@pytest.mark.parametrize("case", ["identical-pair", "empty-rejected", "missing-prompt", "label-not-boolean", "kto-on-pairwise"])
def test_bad_preference_data_is_refused_with_its_line(case, tiny_model, dataset, tmp_path, monkeypatch):
    objective, fmt = ("kto", "unpaired") if case == "label-not-boolean" else ("kto" if case == "kto-on-pairwise" else "dpo", "preference")
    path = dataset(fmt, 16)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    bad = rows[4]
    if case == "identical-pair":
        bad["rejected"] = bad["chosen"]
        expect = f"{path}:5: 'chosen' is identical to 'rejected': the pair prefers nothing"
    elif case == "empty-rejected":
        bad["rejected"] = " "
        expect = f"{path}:5: field 'rejected' is empty"
    elif case == "missing-prompt":
        del bad["prompt"]
        expect = f"{path}:5: missing field 'prompt'"
    elif case == "label-not-boolean":
        bad["label"] = "yes"
        # The loader sees it first: a column of booleans with one string in it.
        expect = f"{path}:5: field 'label' is 'yes' (str), but line 1's is a bool; every row's field must have one type"
    else:
        expect = ("cannot detect the format from columns [chosen, prompt, rejected] for objective kto (they are preference rows, "
                  "which objective dpo or orpo reads); expected one of: unpaired (prompt, completion, label)")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = base_config(tiny_model, path, objective=objective)
    code, result = train(cfg, tmp_path, monkeypatch)
    assert code == 2 and result["reason"] == "InvalidDataset", result
    assert expect in result["message"], result["message"]


def test_recipe_configs_carry_the_objective_settings(tiny_model, dataset, tmp_path):
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.recipes import RECIPES, dpo, kto, orpo, recipe_for

    cfg = parse_config(base_config(tiny_model, dataset("preference", 8), objective="dpo", preference={"beta": 0.3, "lossType": "ipo"}))
    args = dpo.to_dpo_config(cfg, output_dir=tmp_path, has_eval=True)
    assert (args.beta, args.loss_type, args.max_length) == (0.3, ["ipo"], 64)
    assert recipe_for(cfg) is RECIPES["dpo"]
    cfg = parse_config(base_config(tiny_model, dataset("preference", 8), objective="orpo", preference={"beta": 0.2}))
    assert orpo.to_orpo_config(cfg, output_dir=tmp_path, has_eval=False).beta == 0.2
    cfg = parse_config(base_config(tiny_model, dataset("unpaired", 8), objective="kto", kto={"desirableWeight": 1.5}))
    args = kto.to_kto_config(cfg, output_dir=tmp_path, has_eval=False)
    assert (args.beta, args.desirable_weight, args.undesirable_weight) == (0.1, 1.5, 1.0)


def test_dpo_continues_an_sft_adapter_with_it_as_the_reference(tiny_model, dataset, tmp_path, monkeypatch):
    """SFT, then DPO on top (model.adapterFrom as a URI, as the operator resolves a
    job's name): the SFT adapter is the trainable start and, frozen, the reference;
    the output is one adapter on the original base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kubetune_trainer.evaluation.preference import pairs_of, preference_accuracy

    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    code, _ = train(base_config(tiny_model, dataset("completion"), training={"maxSteps": 20}, output={"uri": f"file://{sft_out}"},
                                checkpoint={"uri": f"file://{tmp_path}/sft-ckpt"}), tmp_path, monkeypatch, "sft")
    assert code == 0
    cfg = base_config(tiny_model, dataset("preference"), objective="dpo", lora=None, evaluation=PREFERENCE_EVAL,
                      model={"uri": f"file://{tiny_model}", "adapterFrom": f"file://{sft_out}/adapter"},
                      training={"maxSteps": 20}, output={"uri": f"file://{dpo_out}"}, checkpoint={"uri": f"file://{tmp_path}/dpo-ckpt"})
    code, result = train(cfg, tmp_path, monkeypatch, "dpo")
    assert code == 0, result
    # "base" is the SFT model here, what the run started from: it learnt the lookup's
    # code words, not the code tongue, and ranks held-out pairs of fresh words no
    # better than chance (0.41-0.62 over three seeds; tuned 0.83-0.97); DPO on top teaches the preference.
    base, tuned = _accuracy(result)
    assert tuned >= base + 0.25 and tuned >= 0.8, (base, tuned)
    summary = json.loads((dpo_out / "metrics.json").read_text())
    margins = [h["rewardMargin"] for h in summary["history"] if "rewardMargin" in h]
    assert margins[-1] > margins[0] + 0.3, margins
    # DPO's loss starts at log 2 only when the policy equals the reference: the SFT adapter, not the bare base.
    first = next(h["trainLoss"] for h in summary["history"] if "trainLoss" in h)
    assert abs(first - 0.6931) < 1e-3, first

    tok = AutoTokenizer.from_pretrained(dpo_out / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), dpo_out / "adapter")
    assert list(model.peft_config) == ["default"] and not (dpo_out / "adapter" / "ref").exists()  # TRL's frozen copy is not output
    assert preference_accuracy(model, tok, pairs_of(held_out("preference"))) >= 0.8


def test_dpo_kill9_resumes_from_the_last_committed_checkpoint(tiny_model, dataset, tmp_path, minio, bucket, launch):
    """As for SFT (test_resilience): a DPO trainer killed with SIGKILL mid-run resumes at
    the committed step, reuses the base evaluation, retrains nothing before the step and
    still learns the preference. (That a resumed run ends where an uninterrupted one
    does is shown for SFT on the same resume path; it is not paid for twice.)"""
    import re
    import signal

    from .helpers import committed_steps, wait_for

    client = minio.client()
    train_rows = dataset("preference")

    def cfg(name: str) -> dict:
        return base_config(tiny_model, train_rows, objective="dpo", evaluation=PREFERENCE_EVAL, dataset={"evalSplit": None},
                           training={"maxSteps": 16, "batchSize": 8, "gradientAccumulationSteps": 2, "logEverySteps": 2},
                           checkpoint={"uri": f"s3://{bucket}/{name}/ckpt", "everySteps": 8, "keepLast": 2},
                           output={"uri": f"s3://{bucket}/{name}/out"})

    first = launch(cfg("job"), tmp_path / "first")
    wait_for(lambda: committed_steps(client, bucket, "job/ckpt/"), 240, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.wait()
    at_kill = committed_steps(client, bucket, "job/ckpt/")
    assert at_kill and max(at_kill) < 16, at_kill

    second = launch(cfg("job"), tmp_path / "second")
    assert second.wait() == 0, second.output()[-3000:]
    assert f"resuming from committed checkpoint step {max(at_kill)}" in second.output()
    assert "base model evaluation reused from base-eval.json" in second.output()
    logged = [int(m) for m in re.findall(r"step (\d+)/\d+ loss", second.output())]
    assert logged and min(logged) > max(at_kill), logged
    assert second.result()["step"] == 16
    job_m = json.loads(client.get_object(Bucket=bucket, Key="job/out/metrics.json")["Body"].read())
    assert job_m["train"]["resumedFrom"] == max(at_kill)
    assert job_m["final"]["preferenceAccuracy"] > job_m["base"]["preferenceAccuracy"]
    assert committed_steps(client, bucket, "job/ckpt/") == [8, 16]


@pytest.mark.slow
def test_dpo_deepspeed_zero2_two_processes_trains_and_resumes_after_kill(tiny_model, dataset, tmp_path, launch):
    """DPO + LoRA under DeepSpeed ZeRO-2, `torchrun --nproc-per-node 2` on CPU (gloo): each
    rank's ZeRO partition is checkpointed, and a kill -9 resumes at the committed step."""
    import re
    import signal

    from .helpers import wait_for

    store = tmp_path / "ckpt"
    committed = lambda: sorted(int(p.parent.name.split("-")[1]) for p in store.glob("step-*/COMMITTED.json"))  # noqa: E731
    cfg = base_config(tiny_model, dataset("preference"), objective="dpo", dataset={"evalSplit": None},
                      distributed={"strategy": "deepspeed", "deepspeed": {"zeroStage": 2}},
                      training={"maxSteps": 8, "batchSize": 4, "logEverySteps": 1},
                      checkpoint={"uri": f"file://{store}", "everySteps": 4, "keepLast": 2})
    first = launch(cfg, tmp_path / "first", torchrun=2)
    wait_for(committed, 400, "the first committed checkpoint", first, interval=0.05)
    first.kill(signal.SIGKILL)
    first.proc.wait()
    at_kill = committed()
    assert at_kill and max(at_kill) < 8, at_kill
    files = [f["path"] for f in json.loads((store / f"step-{max(at_kill):08d}" / "COMMITTED.json").read_text())["files"]]
    assert any(re.search(r"global_step\d+/.*rank_1.*optim_states", f) for f in files), files

    second = launch(cfg, tmp_path / "second", torchrun=2)
    assert second.wait(600) == 0, second.output()[-4000:]
    assert f"resuming from committed checkpoint step {max(at_kill)}" in second.output()
    assert second.result()["step"] == 8
    losses = [float(x) for x in re.findall(r"step \d+/8 loss (\S+)", second.output())]
    assert losses and losses[-1] < 0.6931, losses  # below log 2: the preference is being learnt after the resume
