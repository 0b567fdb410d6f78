"""spec.model.adapterFrom naming a FineTuneJob: wait while it runs or does not
exist yet, fail when it failed or has no adapter; the renderer gets its adapter URI."""

from __future__ import annotations

import pytest

from kubetune_operator.api.status import Reason as R
from kubetune_operator.controllers.finetunejob.adapter_source import Dependents, Resolved, resolve, with_source_adapter
from kubetune_operator.runtime import PermanentError

from .bad_manifests import minimal_manifest


def _source(phase: str | None, **status) -> dict:
    return {"metadata": {"name": "sft"}, "status": {"phase": phase, **status} if phase else {}}


@pytest.mark.parametrize("phase", [None, "Pending", "Queued", "Running", "Suspended"])
def test_waits_while_the_source_is_not_finished(phase):
    found = resolve("ml", "sft", _source(phase))
    assert found == Resolved(waiting=f"model.adapterFrom: FineTuneJob ml/sft is {phase or 'not started'}: waiting for it to succeed")
    assert found.reason == R.ADAPTER_SOURCE_PENDING


def test_waits_for_a_source_that_does_not_exist_yet():
    """A file applying the DPO job before its SFT job: the first may be seen alone."""
    found = resolve("ml", "sft", None)
    assert found.uri is None and found.reason == R.ADAPTER_SOURCE_MISSING
    assert found.waiting == "model.adapterFrom: FineTuneJob ml/sft does not exist: waiting for it to be created (or name an adapter URI)"


@pytest.mark.parametrize("phase", ["Succeeded", "Serving"])
def test_a_finished_source_gives_its_adapter_uri(phase):
    assert resolve("ml", "sft", _source(phase, output={"adapterUri": "s3://b/ml/sft/output/adapter"})).uri == "s3://b/ml/sft/output/adapter"


@pytest.mark.parametrize("source, reason, text", [
    (_source("Failed", conditions=[{"type": "Failed", "status": "True", "reason": "LossDiverged"}]), R.ADAPTER_SOURCE_FAILED,
     "model.adapterFrom: FineTuneJob ml/sft failed (LossDiverged)"),
    (_source("Succeeded", output={"mergedUri": "s3://b/m"}), R.ADAPTER_SOURCE_FAILED, "succeeded without an adapter"),
])
def test_a_source_that_cannot_give_an_adapter_fails_the_job(source, reason, text):
    with pytest.raises(PermanentError) as err:
        resolve("ml", "sft", source)
    assert err.value.reason == reason and text in err.value.message


def test_the_renderer_gets_the_source_jobs_uri_and_the_stored_spec_is_unchanged():
    from kubetune_operator.api import parse_job
    from kubetune_operator.render.trainer_config import Placement, render_trainer_config

    doc = minimal_manifest("dpo")
    doc["spec"].update(objective="dpo", dataset={"trainUri": "s3://bucket-one/prefs.jsonl"})
    doc["spec"]["model"]["adapterFrom"] = "sft"
    job = parse_job(doc).job
    assert job.spec.model.adapter_from_job == "sft"
    placement = Placement("s3://bucket-one/c", "s3://bucket-one/o", None, None, 9400)
    with pytest.raises(ValueError, match="model.adapterFrom must be an adapter URI here"):
        render_trainer_config(job.spec, namespace="ml", name="dpo", placement=placement)
    resolved = with_source_adapter(job, "s3://b/ml/sft/output/adapter")
    config = render_trainer_config(resolved.spec, namespace="ml", name="dpo", placement=placement)
    assert config["model"]["adapterFrom"] == "s3://b/ml/sft/output/adapter" and config["objective"] == "dpo"
    assert job.spec.model.adapter_from == "sft"  # the stored spec is not changed


def test_a_source_job_knows_its_dependents_as_their_specs_change():
    index = Dependents()
    index.seen(("ml", "dpo"), {"spec": {"model": {"adapterFrom": "sft"}}})
    index.seen(("ml", "kto"), {"spec": {"model": {"adapterFrom": "sft"}}})
    index.seen(("other", "dpo"), {"spec": {"model": {"adapterFrom": "sft"}}})  # another namespace's sft
    index.seen(("ml", "uri"), {"spec": {"model": {"adapterFrom": "s3://b/ml/sft/output/adapter"}}})
    index.seen(("ml", "sft"), {"spec": {"model": {}}})
    assert index.of(("ml", "sft")) == [("ml", "dpo"), ("ml", "kto")]
    index.seen(("ml", "kto"), {"spec": {"model": {"adapterFrom": "other"}}})  # its spec now names another job
    index.forget(("ml", "dpo"))  # deleted
    assert index.of(("ml", "sft")) == [] and index.of(("ml", "other")) == [("ml", "kto")]
    assert index.of(("other", "sft")) == [("other", "dpo")]
