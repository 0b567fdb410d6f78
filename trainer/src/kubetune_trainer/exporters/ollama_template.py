"""A tokenizer's Jinja chat template as an Ollama TEMPLATE (Go's text/template).

Parsed as transformers parses it (trim_blocks, lstrip_blocks, the
`{% generation %}` tag), then translated node by node for what chat templates
commonly use: a loop over `messages`, tests on a message's role (`==`, `!=`,
`in`, and/or/not), `loop.first`/`loop.last`/`loop.index0`, the message's role
and content (also `messages[N]`'s, for a fixed N >= 0), string literals, `bos_token`/`eos_token`, `add_generation_prompt`.
Anything else is refused (`Unsupported`, naming the construct) rather than
translated approximately.

Ollama gives a template `.Messages` (each with `.Role` and `.Content`) and no
`add_generation_prompt`: the model is asked to answer when the last message is
not the assistant's, so `add_generation_prompt` becomes "the last message's
role is not assistant" (`$gen`, set in a prelude loop).
"""

from __future__ import annotations

import json

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols

GEN = "$gen"
PRELUDE = '{{ $gen := true }}{{ range .Messages }}{{ $gen = ne .Role "assistant" }}{{ end }}'
FIELDS = {"role": "Role", "content": "Content"}
LOOP = {"first": "(eq $i 0)", "last": "(eq (len (slice $.Messages $i)) 1)", "index0": "$i"}


def go_string(text: str) -> str:
    """A Go interpreted string literal of `text`: JSON's escapes, but non-ASCII
    kept as UTF-8 (JSON's \\uXXXX surrogate pairs are not valid Go escapes)."""
    return json.dumps(text, ensure_ascii=False)


class Unsupported(ValueError):
    """A construct the translation does not cover."""


class _GenerationTag(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (marks assistant
    tokens for training); rendering is just its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def to_go_template(source: str, tokens: dict[str, str]) -> str:
    """`source` (Jinja) as a Go text/template; `tokens`: bos_token/eos_token values."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise Unsupported(f"the chat template does not parse: {exc}") from None
    return PRELUDE + _Translator(tokens).block(tree.body)


class _Translator:
    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens
        self.loop: str | None = None  # the loop variable's name inside `for message in messages`

    # ------------------------------------------------------------------ statements

    def block(self, body: list[nodes.Node]) -> str:
        return "".join(self.statement(node) for node in body)

    def statement(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.Output):
            return "".join(self.output(child) for child in node.nodes)
        if isinstance(node, nodes.If):
            return self.if_(node)
        if isinstance(node, nodes.For):
            return self.for_(node)
        if isinstance(node, nodes.CallBlock) and isinstance(node.call, nodes.Call) and \
                isinstance(node.call.node, nodes.ExtensionAttribute):
            return self.block(node.body)  # {% generation %}
        raise Unsupported(f"{type(node).__name__} statements (line {node.lineno})")

    def output(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.TemplateData):
            # Every "{" as an action of its own: escaping only "{{" let a literal
            # ending in "{" and the next one (or an action) starting with one
            # join into a Go action.
            return node.data.replace("{", '{{ "{" }}')
        if isinstance(node, nodes.Const) and isinstance(node.value, str):
            return self.output(nodes.TemplateData(node.value))
        if isinstance(node, (nodes.Concat, nodes.Add)):
            parts = node.nodes if isinstance(node, nodes.Concat) else [node.left, node.right]
            return "".join(self.output(part) for part in parts)
        return "{{ " + self.expr(node) + " }}"

    def if_(self, node: nodes.If) -> str:
        out = "{{ if " + self.expr(node.test) + " }}" + self.block(node.body)
        for branch in node.elif_:
            out += "{{ else if " + self.expr(branch.test) + " }}" + self.block(branch.body)
        if node.else_:
            out += "{{ else }}" + self.block(node.else_)
        return out + "{{ end }}"

    def for_(self, node: nodes.For) -> str:
        if not (isinstance(node.target, nodes.Name) and isinstance(node.iter, nodes.Name) and node.iter.name == "messages"):
            raise Unsupported(f"a for loop over anything but messages (line {node.lineno})")
        if node.else_ or node.test is not None or node.recursive or self.loop:
            raise Unsupported(f"for-else, filtered, recursive or nested loops (line {node.lineno})")
        self.loop = node.target.name
        try:
            return "{{ range $i, $m := $.Messages }}" + self.block(node.body) + "{{ end }}"
        finally:
            self.loop = None

    # ------------------------------------------------------------------ expressions

    def expr(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.Const) and isinstance(node.value, (str, bool, int)):
            if isinstance(node.value, bool):
                return "true" if node.value else "false"
            return go_string(node.value) if isinstance(node.value, str) else str(node.value)
        if isinstance(node, nodes.Name):
            return self.name(node)
        if isinstance(node, (nodes.Getitem, nodes.Getattr)):
            return self.field(node)
        if isinstance(node, nodes.Compare):
            return self.compare(node)
        if isinstance(node, (nodes.And, nodes.Or)):
            return f"({'and' if isinstance(node, nodes.And) else 'or'} {self.expr(node.left)} {self.expr(node.right)})"
        if isinstance(node, nodes.Not):
            return f"(not {self.expr(node.node)})"
        raise Unsupported(f"the expression {type(node).__name__} (line {node.lineno})")

    def name(self, node: nodes.Name) -> str:
        if node.name == "add_generation_prompt":
            return GEN
        if node.name in self.tokens:
            return go_string(self.tokens[node.name])
        raise Unsupported(f"the variable {node.name!r} (line {node.lineno})")

    def field(self, node) -> str:
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        base = getattr(node.node, "name", None)
        if self.loop and base == self.loop and key in FIELDS:  # (base is None for an expression: not the loop's message)
            return f"$m.{FIELDS[key]}"
        if base == "loop" and self.loop and key in LOOP:
            return LOOP[key]
        position = _message_at(node.node)
        if position is not None and key in FIELDS:
            # messages[0]['role'] (SmolLM2's "is there a system turn?"): Go's index; a
            # template asks it where a message exists (in the loop, on loop.first).
            return f"(index $.Messages {position}).{FIELDS[key]}"
        raise Unsupported(f"{base or 'an expression'}.{key} (line {node.lineno})")

    def compare(self, node: nodes.Compare) -> str:
        if len(node.ops) != 1:
            raise Unsupported(f"chained comparisons (line {node.lineno})")
        op, left, right = node.ops[0].op, self.expr(node.expr), node.ops[0].expr
        if op in ("eq", "ne"):
            return f"({op} {left} {self.expr(right)})"
        if op in ("in", "notin") and isinstance(right, (nodes.List, nodes.Tuple)):
            either = "(or " + " ".join(f"(eq {left} {self.expr(item)})" for item in right.items) + ")"
            return either if op == "in" else f"(not {either})"
        raise Unsupported(f"the comparison {op!r} (line {node.lineno})")


def _message_at(node: nodes.Node) -> int | None:
    """N for `messages[N]` with a constant N >= 0 (Go's index takes no negative), else None."""
    if isinstance(node, nodes.Getitem) and getattr(node.node, "name", None) == "messages" and \
            isinstance(node.arg, nodes.Const) and type(node.arg.value) is int and node.arg.value >= 0:
        return node.arg.value
    return None
