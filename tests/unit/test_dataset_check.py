"""`kubetune validate --dataset`: line-numbered problems, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubetune_operator.cli.dataset_check import check_dataset, format_report


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def lines(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = {"instruction": "add 2 and 3", "output": "5"}


def test_good_instruction_jsonl_reports_format_rows_and_lengths(tmp_path):
    report = check_dataset(write(tmp_path, "d.jsonl", lines(GOOD, {"instruction": "x", "input": "ctx", "output": "yy"})))
    assert report.ok and report.format == "instruction" and report.rows == 2
    assert sorted(report.lengths) == [len("x") + len("yy") + len("ctx"), len("add 2 and 3") + 1]
    assert "format instruction, 2 rows, 0 bad, 0 duplicate" in format_report(report)


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("missing.jsonl", lines(GOOD, {"instruction": "no answer"}), "missing.jsonl:2: missing field 'output'"),
        ("empty-out.jsonl", lines(GOOD, GOOD | {"output": "  "}), "empty-out.jsonl:2: field 'output' is empty"),
        ("types.jsonl", lines(GOOD, {"instruction": "x", "output": 5}), "types.jsonl:2: field 'output' must be a string, got int"),
        ("broken.jsonl", lines(GOOD) + '{"instruction": "x", "output"\n', "broken.jsonl:2: invalid JSON"),
        ("truncated.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "out', "truncated.json:3: invalid JSON"),
        ("unclosed.json", '[\n  {"instruction": "a", "output": "b"}\n', "unclosed.json:3: invalid JSON: the array is not closed"),
        ("empty.jsonl", "", "empty.jsonl: empty file: no rows"),
        ("garbage.jsonl", bytes(range(256)) * 4, "garbage.jsonl: not a text file (NUL byte at offset 0)"),
        ("latin1.jsonl", '{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1"), "latin1.jsonl:1: not valid UTF-8"),
        ("chat.jsonl", lines({"messages": [{"role": "user", "content": "hi"}]}), "chat.jsonl:1: no non-empty assistant message"),
        ("roles.jsonl", lines({"messages": [{"role": "bot", "content": "hi"}]}), "roles.jsonl:1: messages[0].role 'bot' is not one of"),
        ("unknown.jsonl", lines({"question": "q", "answer": "a"}), "unknown.jsonl:1: cannot detect the format from columns [answer, question]"),
        ("rows.csv", "prompt,completion\nhello,world\nhi,\n", "rows.csv:3: field 'completion' is empty"),
        ("ragged.csv", "text\nfine\nsplit,too,far\n", "ragged.csv:3: more values than the 1 header columns"),
        ("notes.txt", "just some prose\n", "notes.txt: unsupported file type .txt"),
    ],
)
def test_bad_dataset_gives_a_located_error(tmp_path, name, content, expected):
    report = check_dataset(write(tmp_path, name, content))
    assert not report.ok
    assert expected in format_report(report).replace(str(tmp_path) + "/", "")


def test_duplicates_are_counted_and_located_but_do_not_fail(tmp_path):
    report = check_dataset(write(tmp_path, "d.jsonl", lines(GOOD, GOOD, GOOD)))
    assert report.ok and report.duplicate_count == 2
    assert "line 2 duplicates line 1" in format_report(report)


def test_parquet_and_json_array_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": ""}]), path)
    report = check_dataset(str(path))
    assert report.format == "text" and report.rows == 2 and report.bad_rows == ["row 2: field 'text' is empty"]
    arr = check_dataset(write(tmp_path, "a.json", json.dumps([{"prompt": "p", "completion": "c"}] * 2, indent=2)))
    assert arr.format == "completion" and arr.rows == 2 and arr.duplicate_count == 1


def test_declared_format_is_enforced(tmp_path):
    report = check_dataset(write(tmp_path, "d.jsonl", lines({"text": "plain"})), declared_format="chat")
    assert report.bad_rows == ["line 1: field 'messages' must be a non-empty list of {role, content}"]


def test_missing_file_and_directory(tmp_path):
    assert check_dataset(str(tmp_path / "nope.jsonl")).errors == ["no such file"]
    assert check_dataset(str(tmp_path)).errors == ["is a directory, not a data file"]


def test_cli_exit_codes_and_no_traceback(tmp_path):
    good = write(tmp_path, "good.jsonl", lines(GOOD))
    bad = write(tmp_path, "bad.bin", b"\x00\x01garbage")
    cli = [sys.executable, "-m", "kubetune_operator.cli", "validate", "--dataset"]
    ok = subprocess.run(cli + [good], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    failed = subprocess.run(cli + [bad], capture_output=True, text=True)
    assert failed.returncode == 1 and "not a text file" in failed.stdout and "Traceback" not in failed.stdout + failed.stderr


def test_dataset_columns_are_honoured_as_the_trainer_honours_them(tmp_path):
    from kubetune_contract.sections import ColumnMapping

    data = write(tmp_path, "qa.jsonl", lines({"question": "q1", "answer": "a1"}, {"question": "q2", "answer": " "}))
    assert "cannot detect the format from columns [answer, question]" in format_report(check_dataset(data))
    report = check_dataset(data, columns=ColumnMapping(prompt="question", completion="answer"))
    assert report.format == "completion" and report.rows == 2 and report.bad_rows == ["line 2: field 'answer' is empty"]


def test_validate_a_job_with_its_dataset_uses_the_jobs_format_and_columns(tmp_path):
    data = write(tmp_path, "qa.jsonl", lines({"question": "q1", "answer": "a1"}, {"question": "q2", "answer": ""}))
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nmetadata:\n  name: qa\nspec:\n"
        "  model:\n    uri: hf://org/m\n  method: lora\n  dataset:\n    trainUri: s3://bucket-one/qa.jsonl\n"
        "    format: completion\n    columns:\n      prompt: question\n      completion: answer\n")
    out = subprocess.run([sys.executable, "-m", "kubetune_operator.cli", "validate", str(manifest), "--dataset", data],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{data}:2: field 'answer' is empty" in out.stdout
    assert "format completion, 2 rows, 1 bad" in out.stdout


def test_validate_sources_checks_each_source_with_its_own_format_naming_its_index(tmp_path):
    good = write(tmp_path, "pairs.jsonl", lines({"prompt": "p", "completion": "c"}))
    bad = write(tmp_path, "qa.jsonl", lines({"question": "q1", "answer": "a1"}, {"question": "q2", "answer": ""}))
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nmetadata:\n  name: qa\nspec:\n"
        "  model:\n    uri: hf://org/m\n  method: lora\n  dataset:\n    sources:\n"
        f"    - uri: file://{good}\n      weight: 0.7\n"
        f"    - uri: file://{bad}\n      weight: 0.3\n      format: completion\n      columns:\n        prompt: question\n        completion: answer\n")
    out = subprocess.run([sys.executable, "-m", "kubetune_operator.cli", "validate", str(manifest), "--sources"],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"dataset.sources[1]: file://{bad}:2: field 'answer' is empty" in out.stdout
    assert f"dataset.sources[0]: file://{good}: OK" in out.stdout
