"""The FineTuneJob's spec-change rule (api.spec_changes) is shaped so that a
status write pays one cheap comparison: the API server evaluates a CRD's root
rules on every write, the status subresource's included, and CEL's `||` stops
at its first true term. What it refuses on a real API server, and with which
words, is tests/cluster/test_crd.py's."""

from __future__ import annotations

import re

from kubetune_operator.api.crd import build_crd
from kubetune_operator.api.spec_changes import CONFIG_ONLY, GUARDS, IN_POD_TEMPLATE, field_conditions

# The API server's limit on an evaluated messageExpression (k8s.io/apiserver
# pkg/apis/cel MaxEvaluatedMessageExpressionSizeBytes); past it, `message` is shown.
MESSAGE_EXPRESSION_LIMIT = 5 * 1024


def top_level(expression: str, operator: str) -> list[str]:
    """The terms of `expression` joined by `operator` outside parentheses, brackets and string literals."""
    terms, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and expression.startswith(operator, i):
            terms.append(expression[start:i].strip())
            start = i + len(operator)
        i += 1
    assert depth == 0 and quote is None, expression
    return terms + [expression[start:].strip()]


def root_rules() -> list[dict]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]


def test_a_status_write_evaluates_one_root_rule_that_stops_at_a_guard():
    """One root rule (each further one would be evaluated on every status write too),
    whose first terms are the guards: no status yet (the operator's first status
    write), then the spec unchanged (every later one: /status keeps the stored spec)."""
    (rule,) = root_rules()
    terms = top_level(rule["rule"], "||")
    assert terms[:2] == ["!has(oldSelf.status)", "self.spec == oldSelf.spec"] == list(GUARDS)
    assert len(terms) == 3, "everything after the guards is one term, evaluated only when both are false"
    assert terms[2].startswith("(") and terms[2].endswith(")")
    assert top_level(terms[2][1:-1], "&&") == [f"({condition})" for _, condition, _ in field_conditions()]
    assert [path for path, _, _ in field_conditions()] == [*IN_POD_TEMPLATE, *CONFIG_ONLY]


def test_each_guard_implies_every_fields_condition():
    """So the guards change nothing a spec write is allowed or refused: with no status
    yet, no Job exists; with the spec unchanged, no field changed."""
    for path, condition, _ in field_conditions():
        same, *when_free = top_level(condition, "||")
        assert GUARDS[0] in when_free, path
        # `same` with oldSelf's spec taken to be self's: (H) ? ((H) && x == x) : !(H), true either way.
        unchanged = same.replace("oldSelf.spec.", "self.spec.")
        shape = re.fullmatch(r"\(\((?P<h>.+)\) \? \(\((?P=h)\) && self\.spec\.(?P<x>[\w.]+) == self\.spec\.(?P=x)\) : !\((?P=h)\)\)",
                             unchanged)
        assert shape and shape["x"] == path, (path, same)
        assert set(re.findall(r"(?:self|oldSelf)\.spec\.([\w.]+)", same)) <= {path, path.split(".")[0]}, (path, same)


def test_a_refusal_names_each_refused_field_within_the_api_servers_limit():
    """One sentence per refused field, in the order declared, each term a choice
    between two string literals added together: the API server bounds the cost of
    that when the CRD is applied (a list of strings filtered and joined it costs as
    if each element were request-sized, and refused the CRD: tests/cluster/test_crd.py)."""
    (rule,) = root_rules()
    assert rule["fieldPath"] == ".spec"
    terms = top_level(rule["messageExpression"], "+")
    assert len(terms) == len(field_conditions())
    for term, (path, condition, message) in zip(terms, field_conditions()):
        assert term == f"(({condition}) ? '' : '{message.replace(chr(39), chr(92) + chr(39))}. ')", path
        assert message.startswith(f"spec.{path} ") and ("pod template" in message or "no trainer runs on it" in message)
    every_field_refused = " ".join(f"{message}." for _, _, message in field_conditions())
    assert len(every_field_refused.encode()) <= MESSAGE_EXPRESSION_LIMIT
    assert "\n" not in rule["message"] and rule["message"].strip()
