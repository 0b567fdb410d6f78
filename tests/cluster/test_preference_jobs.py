"""SFT, then DPO on top, as two FineTuneJobs on the real control plane: the DPO
job names the SFT job in spec.model.adapterFrom, waits (Pending, with the
reason) while it does not exist yet and while it has not succeeded, then trains
on from its adapter and succeeds; its report shows the reward margins. A job
naming one that does not exist waits for it, creating nothing; once that one
exists and fails, it fails with the reason, and never creates a training Job."""

from __future__ import annotations

import json

import pytest

from tests.harness.waiting import wait_for

from .operator_helpers import condition, create, jobs, quickstart, status, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TRAIN_TIMEOUT = 240


def _dpo(bucket, name: str, source: str) -> dict:
    doc = quickstart(bucket, name, objective="dpo", evaluation={"testSplit": 0.15, "metrics": ["preferenceAccuracy"]})
    doc["spec"]["model"]["adapterFrom"] = source
    doc["spec"]["dataset"] = {"trainUri": bucket.uri("data/prefs.jsonl"), "evalSplit": 0.1, "maxSeqLength": 64}
    doc["spec"]["training"].update(maxSteps=10)
    return doc


def test_dpo_waits_for_its_sft_job_then_trains_on_its_adapter(kube, namespace, operator_factory, s3_env, bucket_with_assets, tmp_path):
    from kubetune_trainer.testing.tiny_model import make_tiny_dataset

    bucket = bucket_with_assets
    bucket.client.upload_file(str(make_tiny_dataset(tmp_path / "prefs.jsonl", "preference", 192)), bucket.name, "data/prefs.jsonl")
    op = operator_factory(**s3_env)
    sft = quickstart(bucket, "sft", suspend=True)  # held, so the DPO job's wait is a state, not a moment
    sft["spec"]["training"].update(maxSteps=10)
    # The DPO job first, as a file listing it before its SFT job is applied: the
    # operator may see it before the SFT job exists (then it waits as for a
    # missing one) or after; either way it must wait, never fail.
    create(kube, namespace, _dpo(bucket, "dpo", "sft"))
    create(kube, namespace, sft)

    def waiting_for_the_suspended_sft():
        st = status(kube, namespace, "dpo")
        valid = condition(st, "Valid") if st.get("phase") == "Pending" else {}
        return st if valid.get("reason") == "AdapterSourcePending" and "sft is Suspended" in valid["message"] else None
    waiting = wait_for(waiting_for_the_suspended_sft, timeout=60, what="dpo pending on the suspended sft job",
                       describe=lambda: json.dumps(status(kube, namespace, "dpo"))[:1500])
    assert condition(waiting, "Valid")["message"] == (f"model.adapterFrom: FineTuneJob {namespace}/sft is Suspended: "
                                                      "waiting for it to succeed"), waiting
    assert not [j for j in jobs(kube, namespace) if j["metadata"]["name"].startswith("dpo")]  # nothing created meanwhile
    kube.raw.merge_patch(f"/apis/kubetune.io/v1alpha1/namespaces/{namespace}/finetunejobs/sft", {"spec": {"suspend": False}})

    sft_status = wait_phase(kube, namespace, "sft", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op)
    assert sft_status["phase"] == "Succeeded", sft_status
    st = wait_phase(kube, namespace, "dpo", "Succeeded", "Failed", timeout=TRAIN_TIMEOUT, operator=op)
    assert st["phase"] == "Succeeded", (st, op.log_tail())
    assert st["evaluation"]["primary"] == "preferenceAccuracy"
    # The trainer was given the SFT job's adapter URI...
    rendered = [json.loads(v) for cm in kube.raw.get(f"/api/v1/namespaces/{namespace}/configmaps")["items"]
                for v in (cm.get("data") or {}).values() if v.lstrip().startswith("{") and '"adapterFrom"' in v]
    assert [c["model"]["adapterFrom"] for c in rendered if c["job"]["name"] == "dpo"] == [sft_status["output"]["adapterUri"]]
    # ...started from it (DPO's first loss is log 2 only when the policy is its reference) and the report shows the margins.
    output = st["output"]["reportUri"].removeprefix(f"s3://{bucket.name}/").rsplit("/", 1)[0]
    summary = json.loads(bucket.client.get_object(Bucket=bucket.name, Key=f"{output}/metrics.json")["Body"].read())
    assert abs(next(h["trainLoss"] for h in summary["history"] if "trainLoss" in h) - 0.6931) < 1e-3
    margins = [h["rewardMargin"] for h in summary["history"] if "rewardMargin" in h]
    assert margins and margins[-1] > margins[0], margins


def test_adapter_from_a_missing_job_waits_for_it_and_fails_when_it_fails(kube, namespace, operator_factory, s3_env, bucket_with_assets):
    bucket = bucket_with_assets
    op = operator_factory(**s3_env)
    create(kube, namespace, _dpo(bucket, "orphan", "source"))
    st = wait_for(lambda: (st := status(kube, namespace, "orphan")).get("phase") and st, timeout=60, what="orphan's first status",
                  describe=op.log_tail)
    assert st["phase"] == "Pending" and condition(st, "Valid")["reason"] == "AdapterSourceMissing", st
    assert condition(st, "Valid")["message"] == (f"model.adapterFrom: FineTuneJob {namespace}/source does not exist: "
                                                 "waiting for it to be created (or name an adapter URI)")

    # The source appears and fails: its events mark the job waiting on it.
    broken = quickstart(bucket, "source")
    broken["spec"]["dataset"]["trainUri"] = bucket.uri("data/missing.jsonl")
    create(kube, namespace, broken)
    assert wait_phase(kube, namespace, "source", "Failed", "Succeeded", timeout=TRAIN_TIMEOUT, operator=op)["phase"] == "Failed"
    st = wait_phase(kube, namespace, "orphan", "Failed", "Succeeded", timeout=60, operator=op)
    assert condition(st, "Failed")["reason"] == "AdapterSourceFailed", st
    assert "failed (InvalidDataset)" in condition(st, "Failed")["message"]
    # A job naming one that already failed fails at once.
    create(kube, namespace, _dpo(bucket, "after-broken", "source"))
    st = wait_phase(kube, namespace, "after-broken", "Failed", "Succeeded", timeout=60, operator=op)
    assert condition(st, "Failed")["reason"] == "AdapterSourceFailed", st
    assert not [j for j in jobs(kube, namespace) if j["metadata"]["name"].startswith(("orphan", "after-broken"))]
