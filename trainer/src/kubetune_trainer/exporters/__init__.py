"""Exporters: each writes one output format under `output.uri` and returns
`{name: uri}`. The run's outputs (the termination message, hence
`status.output`, and the report) are whatever the selected exporters returned,
plus the report; nothing else lists the formats.

A new format is a module here with an `export(inputs) -> {name: uri}`, its
entry in `EXPORTERS`, and the line in `selected` that says when it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kubetune_contract.sections import resolve_formats

from ..config import TrainerConfig
from . import adapter, gguf, merged, ollama
from .failures import ExportFailed
from .inputs import ExportInputs

__all__ = ["EXPORTERS", "ExportFailed", "ExportInputs", "export_all", "selected"]

log = logging.getLogger("kubetune.export")


Exporter = Callable[[ExportInputs], dict[str, str]]

EXPORTERS: dict[str, Exporter] = {"adapter": adapter.export, "merged": merged.export, "gguf": gguf.export,
                                  "ollama": ollama.export}


def selected(cfg: TrainerConfig) -> list[str]:
    """The exporters this config asks for, in the order they run (the operator
    resolved `output.formats`; the contract orders them)."""
    return resolve_formats(cfg.method, cfg.output)


def export_all(inputs: ExportInputs, failures: dict[str, str] | None = None) -> dict[str, str]:
    """Run the selected exporters; {name: uri} of what they wrote. A format that
    fails (`ExportFailed`) is recorded in `failures` as {name: reason} and the
    others still run: the training result stands."""
    outputs: dict[str, str] = {}
    for name in selected(inputs.cfg):
        try:
            outputs.update(EXPORTERS[name](inputs))
        except ExportFailed as exc:
            log.warning("export %s failed: %s", exc.name, exc.reason)
            if failures is None:
                raise
            failures[exc.name] = exc.reason
    return outputs
