"""Preference data (objectives dpo, orpo, kto): detection by objective, the row
checks `kubetune validate --dataset` and the trainer share, and the pairs the
held-out preference accuracy ranks."""

from __future__ import annotations

import json

import pytest

from kubetune_contract.formats import detect_format, row_length, row_problem, undetectable
from kubetune_contract.sections import ColumnMapping
from kubetune_operator.cli import main
from kubetune_operator.cli.dataset_check import check_dataset

PAIR = {"prompt": "Translate kaka.", "chosen": " qivu", "rejected": " zori"}
CHAT_PAIR = {"prompt": [{"role": "user", "content": "Translate kaka."}],
             "chosen": [{"role": "assistant", "content": "qivu"}], "rejected": [{"role": "assistant", "content": "zori"}]}
UNPAIRED = {"prompt": "Translate kaka.", "completion": " qivu", "label": True}


@pytest.mark.parametrize("columns, objective, expected", [
    (["prompt", "chosen", "rejected"], None, "preference"),
    (["prompt", "chosen", "rejected"], "dpo", "preference"),
    (["prompt", "chosen", "rejected"], "orpo", "preference"),
    (["prompt", "chosen", "rejected"], "kto", None),
    (["prompt", "chosen", "rejected"], "sft", None),
    # KTO's columns are the completion format's plus a label: the objective decides.
    (["prompt", "completion", "label"], None, "completion"),
    (["prompt", "completion", "label"], "sft", "completion"),
    (["prompt", "completion", "label"], "kto", "unpaired"),
    (["prompt", "completion"], "kto", None),
    (["messages"], "dpo", None),
])
def test_detection_follows_the_objective(columns, objective, expected):
    assert detect_format(columns, None, objective) == expected


def test_detection_honours_the_column_mapping():
    mapping = ColumnMapping(prompt="question", chosen="good", rejected="bad")
    assert detect_format(["question", "good", "bad"], mapping, "dpo") == "preference"


def test_undetectable_says_which_objective_the_columns_fit():
    text = undetectable(["prompt", "chosen", "rejected"], "kto")
    assert text == ("cannot detect the format from columns [chosen, prompt, rejected] for objective kto (they are preference rows, "
                    "which objective dpo or orpo reads); expected one of: unpaired (prompt, completion, label); "
                    "set dataset.format and dataset.columns")
    assert "they are completion rows, which objective sft reads" in undetectable(["prompt", "completion"], "kto")


@pytest.mark.parametrize("row, problem", [
    (PAIR, None),
    (CHAT_PAIR, None),
    ({**PAIR, "rejected": PAIR["chosen"]}, "'chosen' is identical to 'rejected': the pair prefers nothing"),
    ({**PAIR, "rejected": "  "}, "field 'rejected' is empty"),
    ({k: v for k, v in PAIR.items() if k != "prompt"}, "missing field 'prompt'"),
    ({**PAIR, "chosen": 3}, "field 'chosen' must be a string or a list of {role, content}, got int"),
    ({**CHAT_PAIR, "chosen": [{"role": "user", "content": "qivu"}]}, "chosen must end with a non-empty assistant message"),
    ({**CHAT_PAIR, "rejected": " zori"}, "prompt, chosen and rejected must all be strings or all be message lists"),
    ({**CHAT_PAIR, "prompt": [{"role": "robot", "content": "x"}]}, "prompt[0] must be an object with role"),
])
def test_pairwise_row_checks(row, problem):
    found = row_problem(row, "preference")
    assert (found is None) if problem is None else (problem in (found or "")), found


@pytest.mark.parametrize("row, problem", [
    (UNPAIRED, None),
    ({**UNPAIRED, "label": False}, None),
    ({**UNPAIRED, "label": "true"}, "field 'label' must be true (desirable) or false (undesirable), got 'true' (str)"),
    ({**UNPAIRED, "label": 1}, "got 1 (int)"),
    ({k: v for k, v in UNPAIRED.items() if k != "label"}, "field 'label' must be true (desirable) or false (undesirable), got missing"),
    ({**UNPAIRED, "completion": ""}, "field 'completion' is empty"),
])
def test_unpaired_row_checks(row, problem):
    found = row_problem(row, "unpaired")
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_pair_length_is_its_longer_sequence():
    assert row_length({"prompt": "abc", "chosen": "12345", "rejected": "1"}, "preference") == 8
    assert row_length(CHAT_PAIR, "preference") == len("Translate kaka.") + 4


def test_validate_reports_each_broken_pair_by_line_with_duplicates_and_lengths(tmp_path, capsys):
    rows = [PAIR, {**PAIR, "rejected": PAIR["chosen"]}, {**PAIR, "prompt": "b", "rejected": ""},
            {"chosen": " x", "rejected": " y"}, PAIR, CHAT_PAIR]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["validate", "--dataset", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"{path}:2: 'chosen' is identical to 'rejected': the pair prefers nothing",
                       f"{path}:3: field 'rejected' is empty", f"{path}:4: missing field 'prompt'"]
    assert out[3].startswith(f"{path}: format preference, 6 rows, 3 bad, 1 duplicate; characters per example: min 19, median 20, p95 20, max 20")
    assert f"{path}: warning: line 5 duplicates line 1" in out


def test_validate_with_a_kto_job_reads_unpaired_rows_and_refuses_pairwise_ones(tmp_path, capsys):
    unpaired = tmp_path / "kto.jsonl"
    unpaired.write_text(json.dumps(UNPAIRED) + "\n" + json.dumps({**UNPAIRED, "label": "no"}) + "\n")
    report = check_dataset(str(unpaired), objective="kto")
    assert report.format == "unpaired" and report.bad_rows == [
        "line 2: field 'label' must be true (desirable) or false (undesirable), got 'no' (str)"]
    pairwise = tmp_path / "pairs.jsonl"
    pairwise.write_text(json.dumps(PAIR) + "\n")
    assert "for objective kto (they are preference rows" in check_dataset(str(pairwise), objective="kto").errors[0]


def test_pairs_of_unpaired_rows_match_desirable_with_undesirable_of_one_prompt():
    from kubetune_trainer.evaluation.preference import Pair, pairs_of

    rows = [UNPAIRED, {**UNPAIRED, "completion": " zori", "label": False}, {**UNPAIRED, "completion": " lote", "label": False},
            {"prompt": "other", "completion": " x", "label": True}]
    assert pairs_of(rows) == [Pair(UNPAIRED["prompt"], " qivu", " zori"), Pair(UNPAIRED["prompt"], " qivu", " lote")]
    assert pairs_of([PAIR]) == [Pair(PAIR["prompt"], PAIR["chosen"], PAIR["rejected"])]
