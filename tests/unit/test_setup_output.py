"""procs.setup_output: where the harness finds what an idempotent setup script
(hack/...) made: the variable hack/test.sh exported, else the script's answer."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.procs import setup_output


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "setup.sh"
    path.write_text(body)
    return path


def test_the_exported_variable_wins_and_the_script_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KT_TEST_DIR", "/given/dir")
    assert setup_output("KT_TEST_DIR", script(tmp_path, "touch ran\nexit 1\n")) == Path("/given/dir")
    assert not (tmp_path / "ran").exists()


def test_without_it_the_script_s_last_line_is_the_answer(tmp_path, monkeypatch):
    monkeypatch.delenv("KT_TEST_DIR", raising=False)
    made = script(tmp_path, "echo 'building...'\necho /cache/tool-v1\n")
    assert setup_output("KT_TEST_DIR", made) == Path("/cache/tool-v1")


def test_a_failing_script_is_named_with_its_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KT_TEST_DIR", raising=False)
    with pytest.raises(RuntimeError, match=r"setup.sh failed: .*no compiler"):
        setup_output("KT_TEST_DIR", script(tmp_path, "echo 'no compiler' >&2\nexit 3\n"))
