"""A small Dockerfile reader for the image tests: stages, ARG defaults,
instructions with line continuations joined, and the `pip install` commands
inside RUN instructions (with ARGs substituted)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{(\w+)(:-[^}]*)?\}|\$(\w+)")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, args)
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class PipInstall:
    stage: str | None
    constraints: list[str]
    requirements: list[str]  # requirement strings or local paths
    argv: list[str]


def logical_lines(text: str) -> list[str]:
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((buf + line).strip())
        buf = ""
    return out


def substitute(text: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(3), m.group(0)), text)


def _parse_args(spec: str) -> dict[str, str]:
    out = {}
    for token in shlex.split(spec):
        name, _, default = token.partition("=")
        out[name] = default
    return out


def parse(path: Path, build_args: dict[str, str] | None = None) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages); `build_args` acts like `--build-arg`."""
    build_args = build_args or {}
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            global_args.update({k: build_args.get(k, v) for k, v in _parse_args(rest).items()})
        elif keyword == "FROM":
            parts = rest.split()
            base = substitute(parts[0], global_args)
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, args=dict(global_args)))
        else:
            stage = stages[-1]
            if keyword == "ARG":
                stage.args.update({k: build_args.get(k, v or stage.args.get(k, "")) for k, v in _parse_args(rest).items()})
            stage.instructions.append((keyword, rest))
    return global_args, stages


def pip_installs(stages: list[Stage]) -> list[PipInstall]:
    out = []
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            command = substitute(rest, stage.args)
            for segment in re.split(r"&&|;|\|\|", command):
                words = shlex.split(segment)
                while words and (words[0] in {"then", "else", "do"} or re.match(r"^\w+=", words[0])):
                    words.pop(0)  # shell keywords and VAR=value prefixes
                if "install" not in words or not any(w.endswith("pip") or w == "pip3" for w in words[:3]):
                    continue
                argv = words[words.index("install") + 1:]
                constraints, reqs, i = [], [], 0
                while i < len(argv):
                    a = argv[i]
                    if a in {"-c", "--constraint", "-r", "--requirement"}:
                        constraints.append(argv[i + 1])
                        i += 2
                        continue
                    if not a.startswith("-"):
                        reqs.append(a)
                    i += 1
                out.append(PipInstall(stage=stage.name, constraints=constraints, requirements=reqs, argv=argv))
    return out
