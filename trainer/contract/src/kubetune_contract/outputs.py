"""How a run's outputs are named where the operator and users read them.

Each exporter of the trainer writes one format and returns `{name: uri}`; the
report adds `report`. The termination message and `status.output` carry each
as `<name>Uri` (`adapterUri`, `mergedUri`, `reportUri`, ...), so a new format
needs no change in the operator, the status schema or the report."""

from __future__ import annotations

import re

_NAME = re.compile(r"^[a-z][a-zA-Z0-9]{0,62}$")
OUTPUT_KEY = re.compile(r"^[a-z][a-zA-Z0-9]{0,62}Uri$")


def output_key(name: str) -> str:
    """`adapter` -> `adapterUri`."""
    if not _NAME.match(name):
        raise ValueError(f"output name {name!r} must be a camelCase word")
    return f"{name}Uri"


def output_keys(outputs: dict[str, str]) -> dict[str, str]:
    """{name: uri} as the termination message and status carry it."""
    return {output_key(name): uri for name, uri in outputs.items()}


def output_uri(root: str, name: str) -> str:
    """Where an exporter writes its format under the job's output URI: `<root>/<name>`."""
    return f"{root.rstrip('/')}/{name}"
