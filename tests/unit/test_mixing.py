"""dataset.sources: the mixing plan (exact counts, seeds, repeats), the contract's
rules, the per-source status and the report's table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kubetune_contract.mixing import MAX_STATUS_SOURCES, status_sources
from kubetune_trainer.data import mixing

from .bad_manifests import minimal_manifest


def test_weights_become_shares_of_an_epoch_of_all_rows():
    # 100 + 60 + 40 rows, weights 0.5/0.3/0.2: an epoch of 200 rows, 100/60/40 of them.
    plan = mixing.plan([100, 60, 40], [0.5, 0.3, 0.2], seed=7)
    assert plan.size == 200
    assert plan.counts == [100, 60, 40]
    assert Counter(source for source, _ in plan.order) == {0: 100, 1: 60, 2: 40}
    assert [round(s, 6) for s in plan.shares] == [0.5, 0.3, 0.2]


def test_a_small_source_repeats_whole_before_any_row_repeats_twice():
    # Sizes 10/50/40, weights 5/3/2 (the same shares): the 10-row source is asked for 50.
    plan = mixing.plan([10, 50, 40], [5, 3, 2], seed=1)
    assert plan.counts == [50, 30, 20]
    repeats = Counter(row for source, row in plan.order if source == 0)
    assert set(repeats.values()) == {5}  # every row exactly 5 times
    # The big sources are drawn without repeats.
    assert max(Counter(row for source, row in plan.order if source == 1).values()) == 1
    assert len({row for source, row in plan.order if source == 1}) == 30


def test_rounding_adds_up_to_the_epoch_by_largest_remainder():
    # 3 x 1/3 of 10 rows: 3.33 each, the remainder goes to the first source.
    assert mixing.quotas([4, 3, 3], [1, 1, 1]) == [4, 3, 3]
    assert sum(mixing.quotas([7, 5, 1], [0.25, 0.7, 0.05])) == 13


def test_the_same_seed_gives_the_same_mix_another_seed_another_order():
    a, b, c = (mixing.plan([30, 20, 10], [0.5, 0.3, 0.2], seed=s) for s in (3, 3, 4))
    assert a.order == b.order
    assert a.order != c.order
    assert a.counts == c.counts  # the composition is the weights', whatever the seed


def test_rows_consumed_count_whole_epochs_and_the_prefix_of_a_partial_one():
    plan = mixing.plan([100, 60, 40], [0.5, 0.3, 0.2], seed=7)
    assert mixing.consumed(plan, 400) == [200, 120, 80]
    prefix = Counter(source for source, _ in plan.order[:50])
    assert mixing.consumed(plan, 250) == [100 + prefix[0], 60 + prefix[1], 40 + prefix[2]]
    assert mixing.consumed(plan, 0) == [0, 0, 0]


@pytest.mark.parametrize("weights", [[1, 0], [1, -1]])
def test_the_plan_refuses_weights_that_are_not_positive(weights):
    with pytest.raises(ValueError, match="weights must be > 0"):
        mixing.plan([5, 5], weights, seed=0)


# --------------------------------------------------------------------------- contract


def _problems(dataset: dict) -> list:
    from kubetune_operator.api.manifest import parse_document

    doc = minimal_manifest()
    doc["spec"]["dataset"] = dataset
    return parse_document(doc, source="job.yaml").problems


SOURCES = [{"uri": "s3://bucket-one/a.jsonl", "weight": 0.5}, {"uri": "s3://bucket-one/b.parquet", "weight": 0.3, "format": "completion"}]


def test_a_job_with_sources_is_valid():
    assert _problems({"sources": SOURCES, "evalSplit": 0.1}) == []


@pytest.mark.parametrize("weight", [0, -0.5])
def test_a_weight_that_is_not_positive_is_refused_naming_the_source(weight):
    problems = _problems({"sources": [SOURCES[0], {**SOURCES[1], "weight": weight}]})
    assert [p.path for p in problems] == ["spec.dataset.sources[1].weight"]
    assert "must be > 0" in problems[0].message


def test_train_uri_with_sources_is_refused():
    problems = _problems({"trainUri": "s3://bucket-one/t.jsonl", "sources": SOURCES})
    assert [p.message for p in problems] == ["set dataset.trainUri (one training set) or dataset.sources (several, mixed by weight), not both"]


def test_neither_train_uri_nor_sources_is_refused():
    problems = _problems({"evalSplit": 0.1})
    assert [p.message for p in problems] == ["dataset needs training data: set dataset.trainUri, or dataset.sources to mix several by weight"]


@pytest.mark.parametrize("sources, message", [
    ([], "at least 1"),
    ([SOURCES[0]] * 33, "at most 32"),
])
def test_the_number_of_sources_is_bounded(sources, message):
    problems = _problems({"sources": sources})
    assert [p.path for p in problems] == ["spec.dataset.sources"] and message in problems[0].message


def test_a_source_format_the_objective_cannot_read_is_refused():
    problems = _problems({"sources": [{**SOURCES[0], "format": "preference"}]})
    assert any("dataset.sources[].format must be one the objective reads" in p.message for p in problems)


def test_the_crd_carries_the_rules_and_the_weight_bound():
    from kubetune_operator.api.crd import build_crds

    crd = next(c for c in build_crds() if c["spec"]["names"]["kind"] == "FineTuneJob")
    dataset = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["dataset"]
    rules = [v["rule"] for v in dataset["x-kubernetes-validations"]]
    assert "!(has(self.trainUri) && has(self.sources))" in rules and "has(self.trainUri) || has(self.sources)" in rules
    source = dataset["properties"]["sources"]["items"]
    assert source["properties"]["weight"]["exclusiveMinimum"] == 0 or source["properties"]["weight"].get("exclusiveMinimum") is True
    assert dataset["properties"]["sources"]["maxItems"] == 32


# --------------------------------------------------------------------------- status, report


def _stats(n: int) -> list[dict]:
    return [{"uri": f"s3://b/{i}.jsonl", "weight": 1.0, "rowsRead": 10 + i, "rowsConsumed": 5 + i} for i in range(n)]


def test_the_status_lists_each_source_capped():
    from kubetune_operator.status.report import apply_report

    status: dict = {}
    apply_report(status, {"dataset": status_sources(_stats(3))})
    assert status["dataset"]["sources"][2] == {"uri": "s3://b/2.jsonl", "weight": 1.0, "rowsRead": 12, "rowsConsumed": 7}
    many = status_sources(_stats(MAX_STATUS_SOURCES + 4))
    assert len(many["sources"]) == MAX_STATUS_SOURCES and many["moreSources"] == 4


def test_the_termination_message_keeps_the_sources_within_4kib():
    import json

    from kubetune_trainer.report import MAX_BYTES, termination_message

    text = termination_message("Completed", "ok", dataset=status_sources(_stats(MAX_STATUS_SOURCES)))
    assert len(text.encode()) <= MAX_BYTES and len(json.loads(text)["dataset"]["sources"]) == MAX_STATUS_SOURCES


def test_the_report_has_a_table_of_the_sources():
    from kubetune_trainer.reporting.content import build

    data = {"format": "instruction+completion", "sources": [
        {"uri": "file:///a.jsonl", "format": "instruction", "weight": 0.5, "shareAsked": 0.5, "rowsRead": 10, "trainRows": 9,
         "rowsInEpoch": 12, "rowsConsumed": 24, "shareGot": 0.5}]}
    report = build({"job": "ns/j", "data": data}, [], [], "")
    table = next(s for s in report.sections if s.title == "Training sources")
    assert "rows consumed" in table.headers
    assert table.rows[0][table.headers.index("rows consumed")] == "24"
    data_section = next(s for s in report.sections if s.title == "Data")
    assert all(row[0] != "sources" for row in data_section.rows)


def test_with_sources_the_trainer_reads_the_mix_in_its_planned_order():
    """rowsConsumed counts the planned order's prefix: the Trainer must not reshuffle it."""
    from tests.trainer.helpers import render_config
    from kubetune_trainer.config import parse_config
    from kubetune_trainer.translate import training_arguments

    spec = minimal_manifest()["spec"]
    plain = parse_config(render_config(spec, Path("/nonexistent/kubetune-unit")))
    spec["dataset"] = {"sources": SOURCES}
    mixed = parse_config(render_config(spec, Path("/nonexistent/kubetune-unit")))
    assert training_arguments(mixed, output_dir="/tmp/x", has_eval=False)["train_sampling_strategy"] == "sequential"
    # Without sources each TRL config keeps its own default (KTOConfig's is sequential: its KL term needs it).
    assert "train_sampling_strategy" not in training_arguments(plain, output_dir="/tmp/x", has_eval=False)
