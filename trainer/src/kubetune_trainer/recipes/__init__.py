"""Recipes: one per training objective, each building TRL's own trainer for it.

A recipe is a function `build(session, model, callbacks) -> transformers.Trainer`:
it translates the config into its TRL config (the fields all recipes share come
from `translate.training_arguments`; it adds its objective's own) and builds the
trainer on the session's data and tokenizer. The lifecycle never names a
trainer class. A new objective is a new module here and its entry in `RECIPES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import TrainerConfig
from . import dpo, grpo, kto, orpo, sft

Recipe = Callable[..., Any]

RECIPES: dict[str, Recipe] = {"sft": sft.build, "dpo": dpo.build, "orpo": orpo.build, "kto": kto.build, "grpo": grpo.build}


def recipe_for(cfg: TrainerConfig) -> Recipe:
    """The recipe for the run's objective (`spec.objective`)."""
    return RECIPES[cfg.objective]
