"""Serving with real vLLM (its CPU build, in the test-only vLLM image `make
images` builds) on the real node: the operator's Deployment as built, Ready
through its readiness probe, requests sent to
`http://<service>.<namespace>.svc.cluster.local` (CoreDNS answers the
ClusterIP, kube-proxy routes). Nothing is simulated here.

vLLM starts, to keep `make test` within its budget (at most 6, at most 2 at once):
the scenario test starts 4 (the pool and the merged model side by side, the
pool's rollout when a member leaves, the corrupted adapter alone). The pool's
members are switched to serving once both trained, so that its first pod
serves both; one that finished later would replace that pod (a fifth start).
"""
from __future__ import annotations

import json

import pytest

from kubetune_trainer.testing.tiny_model import MAPPING
from tests.harness.waiting import wait_for

from .operator_helpers import FTJ, condition, create, get, jobs, quickstart, status, wait_phase
from .serving_helpers import Poller, chat, complete, models, ready_addresses, service_address, serving_pods

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SERVE_TIMEOUT = 600  # training, then the weights fetched and vLLM started (1-5 min each on 2 shared cores)
PROMPT = "Give the code word for rizo."
ANSWER = MAPPING["rizo"]
VLLM_ARGS = ["--dtype=float32", "--max-model-len=256"]
# A model served without LoRA is compiled with inductor by vLLM's CPU build
# (with LoRA it is not): about 40 s against 19 s to start alone on this machine.
NO_COMPILE = ["-O0"]


@pytest.fixture
def serving_bucket(bucket_with_assets, tmp_path):
    """The tiny model and its completion data, plus the same task as chat rows."""
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    chat_rows = make_tiny_dataset(tmp_path / "chat.jsonl", fmt="chat", n=192)
    bucket_with_assets.client.upload_file(str(chat_rows), bucket_with_assets.name, "data/chat.jsonl")
    return bucket_with_assets


def served(bucket, name: str, **serving) -> dict:
    doc = quickstart(bucket, name)
    doc["spec"]["serving"] = {"enabled": True, "replicas": 1, "gpus": 0, "extraArgs": VLLM_ARGS, **serving}
    return doc


def deployment(kube, namespace: str, name: str) -> dict | None:
    return _object(kube, f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")


def service(kube, namespace: str, name: str) -> dict | None:
    return _object(kube, f"/api/v1/namespaces/{namespace}/services/{name}")


def _object(kube, path: str) -> dict | None:
    try:
        return kube.raw.get(path)
    except Exception as exc:  # noqa: BLE001 - 404 is the answer we wait for
        if getattr(exc, "status", None) == 404:
            return None
        raise


def ready_pods(kube, namespace: str, service: str) -> list[dict]:
    """The serving pods behind the Service's ready endpoints."""
    ips = {a.split(":")[0] for a in ready_addresses(kube, namespace, service)}
    return [p for p in serving_pods(kube, namespace) if p["status"].get("podIP") in ips]


def test_a_pool_of_two_adapters_merged_mode_and_a_corrupted_adapter_on_real_vllm(
        kube, namespace, operator_factory, s3_env, serving_bucket, real_node, vllm_image):
    """One scenario, to share the training and keep vLLM starts few (at most 2 at once):
    1. four jobs train side by side: two in serving pool `team` (`coding`, with r: 24,
       and `chatty`, on chat rows), `merged` (serving.mode merged, behind a gate it
       passes: validation loss below the base model's), `broken` (not served yet);
    2. the pool (serving switched on for both members once trained) and the merged
       model are served (2 vLLM servers);
    3. `merged` is switched off (serving.enabled false): its Deployment and Service are gone
       by the pass that says so; `chatty` is switched off too and leaves the pool while
       `coding` is asked throughout (a rollout: 2 pool pods); the pool's Deployment goes
       with its last member;
    4. `broken`'s adapter is corrupted, then serving is switched on: vLLM's own error."""
    op = operator_factory(KUBETUNE_VLLM_IMAGE=vllm_image, **s3_env)
    dns = real_node.dns_ip
    coding = served(serving_bucket, "coding", pool="team")
    coding["spec"]["lora"] = {"r": 24}  # vLLM accepts --max-lora-rank 32, not 24
    chatty = served(serving_bucket, "chatty", pool="team")
    chatty["spec"]["dataset"].update(trainUri=serving_bucket.uri("data/chat.jsonl"), format="chat")
    merged = served(serving_bucket, "merged", mode="merged", gate={"metric": "evalLoss"},  # must beat the base model
                    extraArgs=[*VLLM_ARGS, *NO_COMPILE])
    merged["spec"]["output"] = {"formats": ["adapter", "merged"]}
    for doc in (coding, merged):
        doc["spec"]["training"]["maxSteps"] = 40
    for doc in (coding, chatty):
        doc["spec"].pop("evaluation")  # only the gated job needs one; the others' answers are asked of vLLM
        # Switched to serving once both trained, so that the pool's first pod
        # serves both: one that finished later would replace it (a fifth start).
        doc["spec"]["serving"]["enabled"] = False
    for doc in (coding, chatty, merged, _broken(serving_bucket)):
        create(kube, namespace, doc)
    for name in ("coding", "chatty"):
        st = wait_phase(kube, namespace, name, "Succeeded", "Failed", timeout=SERVE_TIMEOUT, operator=op)
        assert st["phase"] == "Succeeded", json.dumps(st, indent=1)
    for name in ("coding", "chatty"):
        kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/{name}", {"spec": {"serving": {"enabled": True}}})

    _pool_serves_both_members(kube, namespace, op, serving_bucket, dns)
    _merged_mode_serves_the_merged_model(kube, namespace, op, dns)
    _serving_switched_off_removes_its_objects_in_one_pass(kube, namespace, op, "merged")
    wait_for(lambda: not [p for p in serving_pods(kube, namespace) if p["metadata"]["labels"].get("kubetune.io/job") == "merged"],
             120, what="the merged model's vLLM gone (at most 2 servers at once)")
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/merged")
    _a_member_leaves_while_the_other_answers(kube, namespace, op, dns)
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/coding")
    wait_for(lambda: deployment(kube, namespace, "team-pool") is None, 120, what="pool Deployment gone with its last member")
    _a_corrupted_adapter_fails_with_vllm_s_own_error(kube, namespace, op, serving_bucket)


def _broken(bucket) -> dict:
    """Only its adapter file matters (it is corrupted before it is served): the
    least training that writes one, so the others get the CPU."""
    broken = quickstart(bucket, "broken")
    broken["spec"]["training"].update(maxSteps=4, logEverySteps=2)
    broken["spec"].pop("evaluation")
    broken["spec"]["checkpoint"] = {"everySteps": 4}
    return broken


def _pool_serves_both_members(kube, namespace, op, bucket, dns) -> None:
    for name in ("coding", "chatty"):
        st = wait_phase(kube, namespace, name, "Serving", "Failed", timeout=SERVE_TIMEOUT, operator=op)
        assert st["phase"] == "Serving", json.dumps(st, indent=1)
        assert st["serving"] == {"endpoint": f"http://team-pool.{namespace}.svc:8000/v1", "ready": True,
                                 "modelName": name, "pool": "team"}
    pool = deployment(kube, namespace, "team-pool")
    assert sorted(o["name"] for o in pool["metadata"]["ownerReferences"]) == ["chatty", "coding"]
    container = pool["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the image's entrypoint runs the operator's args"
    args = container["args"]
    assert args[args.index("--max-lora-rank") + 1] == "32" and args[args.index("--max-loras") + 1] == "2"
    assert deployment(kube, namespace, "coding-serve") is None and deployment(kube, namespace, "chatty-serve") is None

    address = service_address(kube, dns, namespace, "team-pool")
    (pod,) = ready_pods(kube, namespace, "team-pool")
    assert pod["metadata"]["labels"]["kubetune.io/pool"] == "team"
    # vLLM in its container, Ready because its readiness probe answered.
    (vllm,) = pod["spec"]["containers"]
    assert vllm["image"] == op.env["KUBETUNE_VLLM_IMAGE"] and vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert models(address) == ["chatty", "coding", "team-base"]
    tuned = complete(address, "coding", PROMPT)
    assert tuned.strip().startswith(ANSWER), tuned
    base = complete(address, "team-base", PROMPT)
    assert not base.strip().startswith(ANSWER), base
    # The chat template the adapter's tokenizer carries turns messages into the prompt it was trained on.
    messages = [{"role": "user", "content": PROMPT}]
    reply = chat(address, "chatty", messages)
    assert reply["choices"][0]["message"]["content"].strip().startswith(ANSWER), reply
    assert reply["usage"]["prompt_tokens"] == _chat_prompt_tokens(bucket, messages)


def _merged_mode_serves_the_merged_model(kube, namespace, op, dns) -> None:
    st = wait_phase(kube, namespace, "merged", "Serving", "Failed", timeout=SERVE_TIMEOUT, operator=op)
    assert st["phase"] == "Serving" and st["serving"]["modelName"] == "merged", st
    gated = condition(st, "ServingGated")
    assert (gated["status"], gated["reason"]) == ("False", "GatePassed") and "beats the base model's" in gated["message"], gated
    args = deployment(kube, namespace, "merged-serve")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--model", "/models/merged", "--served-model-name", "merged"] and "--enable-lora" not in args
    address = service_address(kube, dns, namespace, "merged-serve")
    assert models(address) == ["merged"]
    assert complete(address, "merged", PROMPT).strip().startswith(ANSWER)


def _serving_switched_off_removes_its_objects_in_one_pass(kube, namespace, op, name: str) -> None:
    """The pass that says the job is no longer served has deleted its Deployment
    and Service already (deletes first, then the status write)."""
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/{name}", {"spec": {"serving": {"enabled": False}}})
    off = wait_for(lambda: (c := condition(status(kube, namespace, name), "Serving")).get("reason") == "ServingDisabled" and c,
                   SERVE_TIMEOUT, interval=0.2, what=f"{name}: Serving=False ServingDisabled",
                   describe=lambda: json.dumps(status(kube, namespace, name)) + op.log_tail(20))
    assert off["status"] == "False" and "Deployment and Service are removed" in off["message"], off
    assert deployment(kube, namespace, f"{name}-serve") is None
    assert service(kube, namespace, f"{name}-serve") is None
    st = status(kube, namespace, name)
    assert st["phase"] == "Succeeded" and st["serving"] == {"ready": False}, st


def _a_member_leaves_while_the_other_answers(kube, namespace, op, dns) -> None:
    both, coding_alone = ("chatty", "coding", "team-base"), ("coding", "team-base")  # the old pool pod's models, the new one's
    (first,) = wait_for(lambda: ready_addresses(kube, namespace, "team-pool"), 60, what="the pool's first pod behind its Service")
    address = service_address(kube, dns, namespace, "team-pool")
    poller = Poller(address, "coding", PROMPT, ANSWER).start()
    try:
        wait_for(lambda: poller.answers[both], 60, interval=0.2, what="an answer from the pool's first pod (both members)",
                 describe=lambda: f"{dict(poller.answers)}; failures {poller.failures[:5]}")
        kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/chatty", {"spec": {"serving": {"enabled": False}}})
        wait_for(lambda: _rolled_out_to(kube, namespace, ["coding"]), SERVE_TIMEOUT, interval=1,
                 what="the pool serving coding alone",
                 describe=lambda: json.dumps(deployment(kube, namespace, "team-pool").get("status")) + op.log_tail(20))
        # The Service's one ready endpoint is the new pod (the old one's may linger in the slice a moment).
        second = wait_for(lambda: (ready := ready_addresses(kube, namespace, "team-pool")) and len(ready) == 1 and ready[0] != first and ready[0],
                          60, interval=0.2, what="the pool's new pod alone behind its Service",
                          describe=lambda: f"{ready_addresses(kube, namespace, 'team-pool')} (first {first})")
        wait_for(lambda: poller.answers[coding_alone] >= 3, 120, interval=0.2, what="answers from the pool's new pod (coding alone)",
                 describe=lambda: f"{dict(poller.answers)}; failures {poller.failures[:5]}")
    finally:
        poller.stop()
    assert not poller.failures, poller.failures[:10]
    # Through the one Service address (kube-proxy chose the pod): the old pod first, then the new one alone.
    assert second != first and set(poller.answers) == {both, coding_alone}, (first, second, poller.answers)
    assert models(address) == list(coding_alone)
    st = status(kube, namespace, "coding")
    assert st["phase"] == "Serving" and st["serving"]["ready"] is True
    assert [o["name"] for o in deployment(kube, namespace, "team-pool")["metadata"]["ownerReferences"]] == ["coding"]
    left = status(kube, namespace, "chatty")
    assert left["phase"] == "Succeeded" and left["serving"] == {"ready": False}, left
    served_no_more = condition(left, "Serving")
    assert (served_no_more["status"], served_no_more["reason"]) == ("False", "ServingDisabled"), served_no_more
    assert "taken out of serving pool team" in served_no_more["message"], served_no_more
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/chatty")


def _a_corrupted_adapter_fails_with_vllm_s_own_error(kube, namespace, op, bucket) -> None:
    assert wait_phase(kube, namespace, "broken", "Succeeded", "Failed", timeout=SERVE_TIMEOUT, operator=op)["phase"] == "Succeeded"
    adapter = status(kube, namespace, "broken")["output"]["adapterUri"]
    key = adapter.removeprefix(f"s3://{bucket.name}/").rstrip("/") + "/adapter_model.safetensors"
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"\x10\x00\x00\x00not safetensors")
    kube.raw.merge_patch(f"{FTJ.format(ns=namespace)}/broken",
                         {"spec": {"serving": {"enabled": True, "replicas": 1, "gpus": 0, "extraArgs": VLLM_ARGS}}})
    failed = wait_for(lambda: (c := condition(status(kube, namespace, "broken"), "Serving")).get("reason") == "ServingFailed" and c,
                      SERVE_TIMEOUT, interval=1, what="ServingFailed",
                      describe=lambda: json.dumps(status(kube, namespace, "broken")) + op.log_tail(20))
    assert failed["status"] == "False"
    assert failed["message"].startswith("vLLM exited with code"), failed
    # vLLM's own last word on it (its log's error line), not a generic "not available".
    assert "Error" in failed["message"] and "header" in failed["message"], failed
    st = status(kube, namespace, "broken")
    assert st["phase"] == "Succeeded" and st["serving"]["ready"] is False, st
    # Stop it before vLLM restarts again (the training result stays in S3).
    kube.raw.request("DELETE", f"{FTJ.format(ns=namespace)}/broken")


def _rolled_out_to(kube, namespace: str, members: list[str]) -> bool:
    d = deployment(kube, namespace, "team-pool") or {}
    s = d.get("status") or {}
    return (d.get("metadata", {}).get("annotations", {}).get("kubetune.io/pool-members") == ",".join(members)
            and s.get("observedGeneration") == d["metadata"]["generation"] and s.get("updatedReplicas") == 1
            and s.get("replicas") == 1 and s.get("availableReplicas") == 1)


def _chat_prompt_tokens(bucket, messages: list[dict]) -> int:
    """Tokens of the prompt the tiny tokenizer's own chat template makes (what vLLM must have used)."""
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
            try:
                bucket.client.download_file(bucket.name, f"models/tiny-llama/{name}", str(Path(tmp) / name))
            except Exception:  # noqa: BLE001 - not every tokenizer writes every file
                pass
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def test_serving_bad_input_is_refused_naming_the_field_with_nothing_half_created(
        kube, namespace, operator_factory, s3_env, serving_bucket, vllm_image):
    op = operator_factory(KUBETUNE_VLLM_IMAGE=vllm_image, **s3_env)
    # Serving a job whose training fails (checked last: its trainer starts meanwhile).
    doomed = served(serving_bucket, "doomed")
    doomed["spec"]["dataset"]["trainUri"] = serving_bucket.uri("data/missing.jsonl")
    create(kube, namespace, doomed)
    # A pool whose second job names another base model: refused before anything is created for it.
    first = served(serving_bucket, "first", pool="shared")
    first["spec"]["suspend"] = True  # it sets the pool's terms; it need not train for this
    create(kube, namespace, first)
    wait_phase(kube, namespace, "first", "Suspended", timeout=60, operator=op)
    other = served(serving_bucket, "other-base", pool="shared")
    other["spec"]["model"] = {"uri": serving_bucket.uri("models/another-model")}
    create(kube, namespace, other)
    st = wait_phase(kube, namespace, "other-base", "Failed", timeout=60, operator=op)
    valid = condition(st, "Valid")
    assert valid["reason"] == "InvalidSpec" and "spec.model.uri" in valid["message"] and "first" in valid["message"], valid
    # Nothing for the refused job: only the first job's Job, and the failing job's if its trainer has started.
    names = {j["metadata"]["name"] for j in jobs(kube, namespace)}
    assert "first-train" in names and names <= {"first-train", "doomed-train"}, names
    # The job whose training failed: not served, and no Deployment.
    st = wait_phase(kube, namespace, "doomed", "Failed", timeout=180, operator=op)
    serving = condition(st, "Serving")
    assert (serving["status"], serving["reason"]) == ("False", "NotServed") and "training failed (InvalidDataset)" in serving["message"]
    # NotServed is the controller's decision, written by the pass that creates serving objects only for a
    # Succeeded job (and a Failed job stays Failed): no Deployment now means none was or will be made.
    assert not kube.raw.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    # An unknown GGUF quantization: the API server refuses it, naming the field.
    bad = quickstart(serving_bucket, "bad-gguf")
    bad["spec"]["output"] = {"formats": ["adapter", "gguf"], "gguf": {"quantization": "q3_k"}}
    with pytest.raises(Exception) as refused:
        create(kube, namespace, bad)
    assert getattr(refused.value, "status", None) == 422 and "spec.output.gguf.quantization" in str(refused.value)
    assert get_or_none(kube, namespace, "bad-gguf") is None


def get_or_none(kube, namespace: str, name: str):
    try:
        return get(kube, namespace, name)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) == 404:
            return None
        raise
