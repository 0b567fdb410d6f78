"""The real model (SmolLM2-135M-Instruct, the `real_model` fixture) trained and
served by vLLM through the operator: the endpoint's greedy answers equal those
of the same model in transformers on the same prompts, first for the adapter
on its base (serving.mode adapter), then, after the job is switched to
serving.mode merged, for the merged model the trainer wrote.

What it costs, and why it is no more (the real model is 540 MB in float32; a
vLLM start is the expensive part on 2 cores):
- one training of 4 LoRA steps, enough to move the greedy answers away from the
  base's (asserted: otherwise an endpoint ignoring the adapter would pass), no
  evaluation (the answers are compared here);
- two vLLM starts, one after the other (the merged Deployment's pod replaces
  the adapter's), each as small as the comparison allows: no inductor compile
  (-O0), 128 tokens of context, one sequence at a time (the prompts are asked
  one by one, as transformers answers them), the LoRA rank the adapter needs;
- transformers answers (tuned, base, merged: greedy, 12 tokens, 4 prompts, each
  model loaded once) while the adapter's vLLM starts.
Measured on the 2-core machine (two sessions): 206 s and 189 s, setup 23 s
included; trained at 40 s, the adapter answering at 100-118 s, the merged model
at 160-177 s.
Pods run on the real node: the trainer in the trainer image, vLLM's CPU build
in the test-only vLLM image (`make images`), both built from the checkout; the
answers are asked through the Service's name, as a client in the cluster would
(CoreDNS, kube-proxy), like tests/cluster/test_serving.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.harness.waiting import wait_for
from tests.trainer.helpers import load_script

from .operator_helpers import FTJ, REPO, condition, create, manifest, status, wait_phase
from .serving_helpers import complete, models, ready_addresses, service_address, serving_pods

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TRAIN_TIMEOUT = 480  # the trainer pod: 540 MB in, 4 steps, adapter and merged model out
SERVE_TIMEOUT = 480  # the weights fetched and vLLM started (one start at a time)
MAX_TOKENS = 12
PROMPTS = 4
# The prompts (chat template, system turn, message) are about 60 tokens; with the
# answer's 12 they fit in 128. One sequence at a time: each prompt is asked alone,
# as transformers answers it.
VLLM_ARGS = ["--dtype=float32", "--max-model-len=128", "--max-num-seqs=1", "--max-num-batched-tokens=128",
             "-O0"]  # -O0: no inductor compile of the merged model (vLLM's CPU build compiles a model served without LoRA)


def _generator():
    return load_script(REPO / "examples" / "meetings" / "generate.py", "meetings_generator")


@pytest.fixture
def real_bucket(s3_bucket, real_model, tmp_path):
    """The real model's directory under models/smollm2 and the meetings rows under data/."""
    gen = _generator()
    for path in real_model.hf.rglob("*"):
        if path.is_file():
            s3_bucket.client.upload_file(str(path), s3_bucket.name, f"models/smollm2/{path.relative_to(real_model.hf)}")
    data = gen.write(tmp_path / "meetings.jsonl", gen.make_rows(64, seed=5))
    s3_bucket.client.upload_file(str(data), s3_bucket.name, "data/meetings.jsonl")
    return s3_bucket


def _download(bucket, uri: str, dst: Path) -> Path:
    prefix = uri.removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/"
    for key in bucket.keys(prefix):
        target = dst / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        bucket.client.download_file(bucket.name, key, str(target))
    return dst


def _hf_answers(model, tokenizer, prompts: list[str], gaps: list[float]) -> list[str]:
    """Greedy, one prompt at a time (no padding), as the endpoint is asked.
    Appends to `gaps` the smallest margin between the chosen token's logit and
    the runner-up's over each answer: how near a tie the greedy choice came
    (vLLM's CPU kernels sum in another order than transformers' eager ones)."""
    import torch

    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt")
            gen = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 return_dict_in_generate=True, output_logits=True)
            top2 = torch.stack(gen.logits).float().topk(2, dim=-1).values  # (tokens, 1, 2)
            gaps.append(float((top2[..., 0] - top2[..., 1]).min()))
            out.append(tokenizer.decode(gen.sequences[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def _transformers_answers(bucket, real_model, output: dict, prompts: list[str], tmp_path: Path) -> dict[str, list[str]]:
    """The tuned model's (adapter on the base), the base's and the merged model's
    answers; "gaps": each one's smallest top-1/top-2 logit margin."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model.hf)
    gaps: list[float] = []
    base = AutoModelForCausalLM.from_pretrained(real_model.hf, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(base, str(_download(bucket, output["adapterUri"], tmp_path / "adapter"))).eval()
    answers = {"adapter": _hf_answers(tuned, tokenizer, prompts, gaps)}
    with tuned.disable_adapter():
        answers["base"] = _hf_answers(tuned, tokenizer, prompts, gaps)
    del base, tuned
    merged = AutoModelForCausalLM.from_pretrained(_download(bucket, output["mergedUri"], tmp_path / "merged"), dtype=torch.float32).eval()
    answers["merged"] = _hf_answers(merged, tokenizer, prompts, gaps)
    return {**answers, "gaps": [round(g, 4) for g in gaps]}


def _rolled_out(kube, namespace: str, name: str, merged: bool) -> bool:
    """Whether the Deployment serves what was asked (its pod template's --model)
    and only that pod is left, ready behind the Service."""
    dep = kube.raw.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    st = dep.get("status") or {}
    done = (("--enable-lora" not in args) == merged and st.get("observedGeneration") == dep["metadata"]["generation"]
            and st.get("updatedReplicas") == st.get("readyReplicas") == st.get("replicas") == 1)
    return done and len(ready_addresses(kube, namespace, name)) == 1 and len(serving_pods(kube, namespace)) == 1


def test_vllm_serves_the_real_model_s_adapter_and_merged_model_as_transformers_answers(
        kube, namespace, operator_factory, s3_env, real_bucket, real_model, real_node, vllm_image, tmp_path):
    from transformers import AutoTokenizer

    started = time.monotonic()

    def mark(what: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {what}", flush=True)

    op = operator_factory(KUBETUNE_VLLM_IMAGE=vllm_image, **s3_env)
    doc = manifest("meet", {
        "model": {"uri": real_bucket.uri("models/smollm2")},
        "dataset": {"trainUri": real_bucket.uri("data/meetings.jsonl"), "maxSeqLength": 96},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {"maxSteps": 4, "learningRate": 0.001, "batchSize": 8, "gradientAccumulationSteps": 1,
                     "gradientCheckpointing": False, "warmupRatio": 0.0, "logEverySteps": 2},
        "checkpoint": {"everySteps": 4},
        "output": {"formats": ["adapter", "merged"]},
        "serving": {"enabled": True, "replicas": 1, "gpus": 0, "mode": "adapter", "extraArgs": VLLM_ARGS},
    })
    doc["spec"].pop("evaluation")  # the answers are compared here, on vLLM
    create(kube, namespace, doc)
    st = wait_phase(kube, namespace, "meet", "Succeeded", "Serving", "Failed", timeout=TRAIN_TIMEOUT, operator=op)
    assert st["phase"] != "Failed", json.dumps(st, indent=1)
    mark(f"trained ({st['phase']})")

    # While the adapter's vLLM starts: what transformers answers.
    tokenizer = AutoTokenizer.from_pretrained(real_model.hf)
    prompts = [tokenizer.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
               for r in _generator().make_rows(PROMPTS, seed=99)]
    expected = _transformers_answers(real_bucket, real_model, st["output"], prompts, tmp_path)
    mark(f"transformers answered: {json.dumps(expected, indent=1)}")
    assert expected["adapter"] != expected["base"], "four steps moved the answers away from the base model's"

    st = wait_phase(kube, namespace, "meet", "Serving", "Failed", timeout=SERVE_TIMEOUT, operator=op)
    assert st["phase"] == "Serving", json.dumps(st, indent=1)
    model_name = st["serving"]["modelName"]
    wait_for(lambda: _rolled_out(kube, namespace, "meet-serve", merged=False), 120, what="the adapter served")
    address = service_address(kube, real_node.dns_ip, namespace, "meet-serve")
    assert models(address) == sorted([model_name, f"{model_name}-base"])  # the adapter on its base
    adapter_answers = [complete(address, model_name, p, MAX_TOKENS) for p in prompts]
    mark(f"vLLM, adapter: {adapter_answers}")
    assert adapter_answers == expected["adapter"]

    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/meet", {"spec": {"serving": {"mode": "merged"}}})
    said: list[str] = []  # the Serving condition's reasons during the rollout (printed: how long each lasts is the machine's)

    def merged_rolled_out() -> bool:
        reason = condition(status(kube, namespace, "meet"), "Serving").get("reason")
        if not said or said[-1] != reason:
            said.append(reason)
        return _rolled_out(kube, namespace, "meet-serve", merged=True)

    wait_for(merged_rolled_out, SERVE_TIMEOUT, what="the merged model served in the adapter's place")
    mark(f"Serving condition during the switch: {' -> '.join(said)}")
    assert models(address) == [model_name]  # the merged model alone
    # The status follows: ServingRollingOut while the adapter's pod answered, ServingReady once rolled out.
    ready = wait_for(lambda: (c := condition(status(kube, namespace, "meet"), "Serving")).get("reason") == "ServingReady" and c,
                     60, what="Serving=True ServingReady once the merged model is rolled out")
    assert (ready["status"], ready["message"]) == ("True", "1/1 vLLM replicas available"), ready
    merged_answers = [complete(address, model_name, p, MAX_TOKENS) for p in prompts]
    mark(f"vLLM, merged: {merged_answers}")
    assert merged_answers == expected["merged"]
