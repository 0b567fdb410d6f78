"""The test suite's own shape: no test reads the system's state at a moment a
sleep chose.

The rule, on the syntax tree of every module under tests/: after a statement
that is a `time.sleep(...)` (or `sleep(...)`, `await asyncio.sleep(...)`) call,
no `assert` may come before a call to something named `wait...` (a wait for an
event or condition: `wait_for`, `wait_phase`, `proc.wait()`, ...). "After"
is the rest of the sleep's block and, out of an `if`, `with` or `try`, the
rest of the enclosing block: a sleep at the end of a loop body is a polling
interval (the loop's condition is read next), not a window. Such an assert
either checks that something happened within a duration (fails when the
machine is slow) or that something did not happen (passes when the machine is
slow): both are timing, not behaviour.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOOPS = (ast.For, ast.AsyncFor, ast.While)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _is_sleep(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Expr):
        return False
    value = stmt.value.value if isinstance(stmt.value, ast.Await) else stmt.value
    return isinstance(value, ast.Call) and _called_name(value) == "sleep"


def _waits(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Call) and _called_name(n).startswith("wait") for n in ast.walk(stmt))


def _asserts(stmt: ast.stmt) -> ast.Assert | None:
    return next((n for n in ast.walk(stmt) if isinstance(n, ast.Assert)), None)


def _blocks(stmt: ast.stmt, rest: list[ast.stmt]):
    """(statements, what follows them) of each block nested in `stmt`."""
    if isinstance(stmt, FUNCTIONS + (ast.ClassDef,)):
        yield stmt.body, []
    elif isinstance(stmt, LOOPS):
        yield stmt.body, []  # the next thing after a loop body is the loop's own test
        yield stmt.orelse, rest
    else:
        for field in ("body", "orelse", "finalbody"):
            yield getattr(stmt, field, None) or [], rest
        for handler in getattr(stmt, "handlers", None) or []:
            yield handler.body, rest
        for case in getattr(stmt, "cases", None) or []:
            yield case.body, rest


def sleep_then_assert(source: str) -> list[tuple[int, int]]:
    """(line of the sleep, line of the assert) of every sleep followed by an
    assert with no wait in between."""
    found = []

    def visit(stmts: list[ast.stmt], after: list[ast.stmt]) -> None:
        for i, stmt in enumerate(stmts):
            rest = stmts[i + 1:] + after
            if _is_sleep(stmt):
                for later in rest:
                    if _waits(later):
                        break
                    if (checked := _asserts(later)) is not None:
                        found.append((stmt.lineno, checked.lineno))
                        break
            for block, following in _blocks(stmt, rest):
                visit(block, following)

    visit(ast.parse(source).body, [])
    return found


def test_no_test_asserts_after_a_sleep():
    offenders = [f"{path.relative_to(REPO)}:{slept} sleeps, :{asserted} asserts"
                 for path in sorted((REPO / "tests").rglob("*.py"))
                 for slept, asserted in sleep_then_assert(path.read_text())]
    assert not offenders, offenders


def test_the_rule_catches_a_window_and_leaves_a_poll_alone():
    nothing_happened = """
def test_x(kube):
    if True:
        time.sleep(2)
    assert not deployments(kube)
"""
    within_a_duration = """
def test_y(poller):
    try:
        poller.start()
        time.sleep(3)
    finally:
        poller.stop()
    assert poller.answered >= 10
"""
    poll = """
def test_z(kube):
    while not done(kube):
        time.sleep(0.3)
    assert done(kube)
"""
    then_wait = """
async def test_w(op):
    await asyncio.sleep(2)
    wait_phase(op, "Running")
    assert op.alive()
"""
    assert sleep_then_assert(nothing_happened) == [(4, 5)]
    assert sleep_then_assert(within_a_duration) == [(5, 8)]
    assert sleep_then_assert(poll) == sleep_then_assert(then_wait) == []
