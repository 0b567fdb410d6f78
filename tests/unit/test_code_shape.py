"""The shape docs/architecture.md promises, kept by a test: the controllers, the
runtime and the trainer's lifecycle read as short functions, and no module
grows past one job's worth of code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "operator/src", REPO / "trainer/src", REPO / "trainer/contract/src"]
SHORT_FUNCTIONS = [
    REPO / "operator/src/kubetune_operator/controllers",
    REPO / "operator/src/kubetune_operator/runtime",
    REPO / "trainer/src/kubetune_trainer/run.py",
    REPO / "trainer/src/kubetune_trainer/recipes",
    REPO / "trainer/src/kubetune_trainer/exporters",
]
MAX_FUNCTION_LINES = 40
MAX_MODULE_LINES = 400


def _files(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(root.rglob("*.py"))


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # From the signature to the last statement, decorators and docstring included.
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.name, node.end_lineno - start + 1


@pytest.mark.parametrize("root", SHORT_FUNCTIONS, ids=lambda p: str(p.relative_to(REPO)))
def test_functions_are_short(root):
    files = _files(root)
    assert files, f"{root} is gone: update this test with where the code moved"
    long = [f"{path.relative_to(REPO)}:{name} ({lines} lines)" for path in files for name, lines in _functions(path)
            if lines > MAX_FUNCTION_LINES]
    assert not long, long


def test_modules_hold_one_job():
    big = [f"{path.relative_to(REPO)} ({n} lines)" for root in SOURCES for path in _files(root)
           if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not big, big
