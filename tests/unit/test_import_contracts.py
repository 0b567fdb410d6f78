"""The import contracts (`.importlinter`, import-linter): which module may import
which. They hold for this checkout, and they are not decoration: a cycle or a
layer breach added to a copy of the sources breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("operator/src", "trainer/src", "trainer/contract/src")
ROOT_PACKAGES = ("kubetune_operator", "kubetune_trainer", "kubetune_contract")
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the sources under `root` (and nothing installed elsewhere)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / s) for s in SOURCES), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", LINT, "--config", str(root / ".importlinter"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def verdicts(out: str) -> dict[str, str]:
    """Each contract's name -> KEPT or BROKEN, from lint-imports' summary."""
    found = {}
    for line in out.splitlines():
        for verdict in ("KEPT", "BROKEN"):
            if line.endswith(f" {verdict}"):
                found[line.removesuffix(f" {verdict}")] = verdict
    return found


@pytest.fixture(scope="module")
def copy_of_sources(tmp_path_factory):
    """A function that copies the three source trees and the contracts somewhere new."""
    def make() -> Path:
        root = tmp_path_factory.mktemp("tree")
        for source in SOURCES:
            shutil.copytree(REPO / source, root / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy(REPO / ".importlinter", root / ".importlinter")
        return root
    return make


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_contracts_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = verdicts(done.stdout)
    assert len(shown) >= 11 and set(shown.values()) == {"KEPT"}, shown


def test_no_module_imports_itself_back():
    """Stricter than the sibling contract: no cycle of modules at all, a package's
    `__init__` and its own modules included."""
    graph = grimp.build_graph(*ROOT_PACKAGES, include_external_packages=False, cache_dir=None)
    cycles = [(m, i) for m in sorted(graph.modules) for i in graph.find_modules_directly_imported_by(m)
              if graph.find_shortest_chain(importer=i, imported=m)]
    assert not cycles, cycles


def test_a_cycle_breaks_them(copy_of_sources):
    root = copy_of_sources()
    contract = root / "trainer/contract/src/kubetune_contract"
    append(contract / "checkpoints.py", "from . import outputs  # noqa")
    append(contract / "outputs.py", "from . import checkpoints  # noqa")
    done = lint_imports(root)
    assert done.returncode == 1, done.stdout + done.stderr
    shown = verdicts(done.stdout)
    assert shown["No import cycles: between the packages and modules of every level"] == "BROKEN", shown
    assert "kubetune_contract" in done.stdout.split("Broken contracts", 1)[1]


def test_a_layer_breach_breaks_them(copy_of_sources):
    """The sweeps' report (below status) reading the trainer's /metrics through
    status.progress: no cycle, only the layers say no."""
    root = copy_of_sources()
    append(root / "operator/src/kubetune_operator/sweeps/report.py", "from ..status.progress import read_trainer_metrics  # noqa")
    done = lint_imports(root)
    assert done.returncode == 1, done.stdout + done.stderr
    shown = verdicts(done.stdout)
    broken = {name for name, verdict in shown.items() if verdict == "BROKEN"}
    assert broken == {next(n for n in shown if n.startswith("Operator: the CLI"))}, shown
    assert "kubetune_operator.sweeps.report -> kubetune_operator.status.progress" in done.stdout
