"""Read FineTuneJob manifests from YAML with every problem located by line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import re

import yaml
from pydantic import ValidationError

from .errors import Problem, problems_from
from .job import API_VERSION, KIND, FineTuneJob
from .sweep import SWEEP_KIND, FineTuneSweep


class ManifestLoader(yaml.SafeLoader):
    """SafeLoader that reads `2e-4` as a number, as Kubernetes' YAML 1.2 parser
    does (PyYAML's YAML 1.1 rules would make it a string)."""


ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


@dataclass
class ParsedManifest:
    source: str
    job: FineTuneJob | None
    problems: list[Problem] = field(default_factory=list)
    sweep: FineTuneSweep | None = None


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path (with list indices) to the 1-based line it starts on."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            out[child] = key_node.start_mark.line + 1
            _line_index(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def _locate(problem_path: str, lines: dict[tuple, int]) -> int | None:
    """The line of the deepest existing ancestor of a dotted path like spec.lora.r or a[2].b."""
    parts: list = []
    for piece in problem_path.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    while parts:
        if tuple(parts) in lines:
            return lines[tuple(parts)]
        parts.pop()
    return lines.get(())


def _validated(model, data: dict, lines: dict[tuple, int]) -> tuple[object | None, list[Problem]]:
    try:
        # Manifests speak camelCase only, as the API server does.
        return model.model_validate(data, by_alias=True, by_name=False), []
    except ValidationError as exc:
        return None, [Problem(p.path, p.message, _locate(p.path, lines)) for p in problems_from(exc, model)]


def _kind_problem(data: object, kinds: tuple[str, ...], lines: dict[tuple, int]) -> Problem | None:
    if not isinstance(data, dict):
        return Problem("", f"expected a {' or '.join(kinds)} mapping, got {type(data).__name__}", lines.get(()))
    if data.get("apiVersion") not in (None, API_VERSION) or data.get("kind") not in (None, *kinds):
        got = f"{data.get('apiVersion')}/{data.get('kind')}"
        return Problem("kind", f"{got} is not a {' or '.join(kinds)}; expected apiVersion {API_VERSION}, kind {' or '.join(kinds)}", lines.get(("kind",)))
    return None


def parse_job(data: object, lines: dict[tuple, int] | None = None, source: str = "<manifest>") -> ParsedManifest:
    """Validate one already-loaded document as a FineTuneJob."""
    lines = lines or {}
    problem = _kind_problem(data, (KIND,), lines)
    if problem:
        return ParsedManifest(source, None, [problem])
    job, problems = _validated(FineTuneJob, data, lines)
    return ParsedManifest(source, job, problems)


def parse_sweep(data: object, lines: dict[tuple, int] | None = None, source: str = "<manifest>") -> ParsedManifest:
    """Validate one already-loaded document as a FineTuneSweep, its search space against its template."""
    from .search_space import problems as search_space_problems

    lines = lines or {}
    problem = _kind_problem(data, (SWEEP_KIND,), lines)
    if problem:
        return ParsedManifest(source, None, [problem])
    sweep, problems = _validated(FineTuneSweep, data, lines)
    if sweep is not None:
        problems = [Problem(p.path, p.message, _locate(p.path, lines)) for p in search_space_problems(sweep.spec)]
    return ParsedManifest(source, None, problems, sweep=None if problems else sweep)


def parse_document(data: object, lines: dict[tuple, int] | None = None, source: str = "<manifest>") -> ParsedManifest:
    """A FineTuneJob or a FineTuneSweep, by its kind."""
    if isinstance(data, dict) and data.get("kind") == SWEEP_KIND:
        return parse_sweep(data, lines, source)
    if isinstance(data, dict) and data.get("kind") not in (None, KIND):
        return ParsedManifest(source, None, [_kind_problem(data, (KIND, SWEEP_KIND), lines or {})])
    return parse_job(data, lines, source)


def load_manifests(path: str | Path, parse=parse_job) -> list[ParsedManifest]:
    """Every document in a YAML file, each parsed (as a FineTuneJob unless `parse`
    says otherwise: `parse_document` takes either kind) or with its problems."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [ParsedManifest(source, None, [Problem("", f"cannot read file: {exc}")])]
    try:
        nodes = list(yaml.compose_all(text, Loader=ManifestLoader))
        docs = list(yaml.load_all(text, Loader=ManifestLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        return [ParsedManifest(source, None, [Problem("", f"not valid YAML: {reason}", line)])]
    results = []
    for node, doc in zip(nodes, docs):
        if doc is None:
            continue
        parsed = parse(doc, _line_index(node) if node is not None else {}, source)
        results.append(parsed)
    if not results:
        results.append(ParsedManifest(source, None, [Problem("", "the file holds no YAML document")]))
    return results
