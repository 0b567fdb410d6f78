"""The shape docs/architecture.md promises, kept by a test: the controllers, the
runtime, the trainer's lifecycle and its data pipeline read as short functions,
no module grows past one job's worth of code, and the data pipeline's modules
share only public names. (Which module may import which: the import contracts,
`.importlinter`, tests/unit/test_import_contracts.py.)"""

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
    REPO / "trainer/src/kubetune_trainer/evaluation_steps.py",
    REPO / "trainer/src/kubetune_trainer/best_checkpoint.py",
    REPO / "trainer/src/kubetune_trainer/data",
    REPO / "trainer/src/kubetune_trainer/recipes",
    REPO / "trainer/src/kubetune_trainer/exporters",
]
# Packages whose modules use no private (`_name`) of another module.
PUBLIC_ONLY = [REPO / "trainer/src/kubetune_trainer/data"]
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


def _private_imports(path: Path, root: Path = REPO):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"{path.relative_to(root)}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"


@pytest.mark.parametrize("root", PUBLIC_ONLY, ids=lambda p: str(p.relative_to(REPO)))
def test_modules_share_only_public_names(root):
    files = _files(root)
    assert files, f"{root} is gone: update this test with where the code moved"
    private = [line for path in files for line in _private_imports(path)]
    assert not private, private


def test_the_private_name_check_sees_one(tmp_path):
    module = tmp_path / "user.py"
    module.write_text("from .read import _blank, load_table\nfrom . import __version__\n")
    assert list(_private_imports(module, tmp_path)) == ["user.py:1: from .read import _blank"]
