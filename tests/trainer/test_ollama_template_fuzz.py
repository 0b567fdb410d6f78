"""The Modelfile TEMPLATE, fuzzed: random chat templates made of what the
translation covers (literal text full of braces, quotes, backslashes and
non-ASCII; loops, role tests, loop.first/last, constants, concatenation,
bos/eos, add_generation_prompt), each rendered by Jinja as transformers
renders it and by Go's text/template (tests/trainer/gotemplate/render.go) as
Ollama does, on conversations whose contents are as hostile: the two must
agree on every one. Seeded, so a failure reproduces."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from kubetune_trainer.exporters.ollama_template import Unsupported, to_go_template

pytestmark = pytest.mark.trainer

GO_RENDER = Path(__file__).parent / "gotemplate" / "render.go"
TOKENS = {"bos_token": "<s>{", "eos_token": "}}</s>"}
PIECES = ["{", "}", "{{", "}}", "{{-", "-}}", "{%", "%}", "{#", '"', "'", "\\", "\\n", "-", " ", "\n", "é", "😀", "\u2028", "$", "`",
          "x", "<|user|>", "\t", "{{ .Messages }}", "{{/* */}}"]
ROLES = ["system", "user", "assistant"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 5)))


def _const(rng: random.Random) -> str:
    return repr(_text(rng))  # a Python repr is a valid Jinja string literal


def _role_test(rng: random.Random, var: str) -> str:
    role = rng.choice(ROLES)
    return rng.choice([f"{var}['role'] == '{role}'", f"{var}.role != '{role}'", f"{var}['role'] in ['{role}', 'system']",
                       "loop.first", "loop.last", f"not loop.first and {var}.role == '{role}'", "loop.index0 == 1"])


def _output(rng: random.Random, var: str | None) -> str:
    options = ["{{ bos_token }}", "{{ eos_token }}", "{{ " + _const(rng) + " }}", "{{ " + _const(rng) + " + " + _const(rng) + " }}"]
    if var:
        options += ["{{ " + var + "['role'] }}", "{{ " + var + ".content }}", "{{ " + _const(rng) + " + " + var + "['content'] }}"]
    return rng.choice(options)


def _body(rng: random.Random, var: str | None, depth: int) -> str:
    out = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.35:
            out.append(_text(rng))
        elif kind < 0.7:
            out.append(_output(rng, var))
        elif kind < 0.85 and var and depth < 2:
            out.append("{% if " + _role_test(rng, var) + " %}" + _body(rng, var, depth + 1)
                       + ("{% else %}" + _body(rng, var, depth + 1) if rng.random() < 0.4 else "") + "{% endif %}")
        elif depth < 2:
            out.append("{% if add_generation_prompt %}" + _body(rng, var, depth + 1) + "{% endif %}")
    return "".join(out)


def random_template(rng: random.Random) -> str:
    return (_body(rng, None, 1) + "{% for message in messages %}" + _body(rng, "message", 0) + "{% endfor %}"
            + _body(rng, None, 1))


def conversations(rng: random.Random) -> list[list[dict]]:
    return [[{"role": role, "content": _text(rng) + " hi"} for role in roles]
            for roles in (["user"], ["system", "user", "assistant"], ["user", "assistant", "user"], ["assistant"])]


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go to run text/template")
def test_random_chat_templates_render_the_same_in_go_as_in_jinja():
    rng = random.Random(26)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    convs = conversations(rng)
    cases = []
    while len(cases) < 400:
        source = random_template(rng)
        try:
            compiled = env.from_string(source)
            go = to_go_template(source, TOKENS)
        except (jinja2.TemplateSyntaxError, Unsupported):
            continue  # only what Jinja parses and the translation covers is compared
        expected = [compiled.render(messages=c, add_generation_prompt=c[-1]["role"] != "assistant", **TOKENS) for c in convs]
        cases.append((source, go, expected))
    run = subprocess.run(["go", "run", str(GO_RENDER)], input=json.dumps({"templates": [go for _, go, _ in cases], "conversations": convs}),
                         capture_output=True, text=True, check=True, timeout=300)
    rendered = json.loads(run.stdout)
    wrong = [(source, go, got, expected) for (source, go, expected), got in zip(cases, rendered) if got != expected]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ; first:\njinja: {wrong[0][0]!r}\ngo:    {wrong[0][1]!r}\n" \
                      f"got:      {wrong[0][2]!r}\nexpected: {wrong[0][3]!r}"
