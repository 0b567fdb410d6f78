"""Test rows as the evaluation uses them: the prompt the model is given (with
the chat template applied for chat data), the question as a person reads it,
and the reference answer. Built from the rows `data.prepare` made, so the
evaluation prompts the model exactly as training showed it its prompts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    prompt: str  # what generate() is given
    question: str  # what the report shows
    reference: str


def _last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"] if messages else "")


def example_of(row: dict, tokenizer) -> Example | None:
    """One normalised row as an Example; None for text rows (no answer to compare)."""
    if "messages" in row:
        history = row["messages"][:-1]
        prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        return Example(prompt, _last_user(history), row["messages"][-1]["content"])
    if "prompt" in row and isinstance(row["prompt"], list):
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        return Example(prompt, _last_user(row["prompt"]), row["completion"][0]["content"])
    if "prompt" in row:
        return Example(row["prompt"], row["prompt"], row["completion"])
    return None


def examples_of(rows: Sequence[dict], tokenizer) -> list[Example]:
    return [e for e in (example_of(r, tokenizer) for r in rows) if e is not None]
