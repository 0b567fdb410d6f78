"""One model's evaluation, and the run's conclusion from the base's and the
tuned model's.

`Task` is what every evaluation of a run shares, prepared once before
training: the test rows (the first `maxSamples`, the same for both models),
the training answers (their mean scores an unparsable numeric answer and is
the `mean` baseline), the primary metric. `measure` evaluates whatever model
the trainer holds (the base before training, the tuned one after): the
validation loss, the test loss and perplexity, and the task metrics from its
answers. Every rank calls it (the losses and generation are collective under
ZeRO-3); rank 0 reports what it returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from kubetune_contract.evaluation_metrics import primary_metric
from kubetune_contract.sections import EvaluationSpec
from kubetune_contract.answers import first_number

from . import scoring
from .examples import Example, examples_of
from .generation import generate_answers
from .preference import Pair, pairs_of, preference_accuracy

MAX_PERPLEXITY_LOSS = 50.0  # exp() of more is not a number anyone reads


@dataclass
class Task:
    spec: EvaluationSpec
    examples: list[Example]  # the test rows evaluated
    test: object | None  # datasets.Dataset of the same rows, for the test loss
    has_validation: bool
    train_prompts: list[str] = field(default_factory=list)
    train_values: list[float] = field(default_factory=list)  # numeric tasks: the training answers' numbers
    # spec.validationMetrics: the validation rows they are scored on (the tuned model only)
    validation_examples: list[Example] = field(default_factory=list)
    # Preference objectives: the test pairs preferenceAccuracy ranks (their test
    # rows are scored by it alone: `test` stays None, as the objective's own
    # loss on them is neither a language-model loss nor what TRL's preference
    # trainers can evaluate on untokenised rows).
    pairs: list[Pair] = field(default_factory=list)

    @property
    def primary(self) -> str | None:
        return primary_metric(self.spec.metrics, has_test=self.test is not None, has_validation=self.has_validation)

    @property
    def numeric(self) -> bool:
        return self.spec.resolved_numeric is not None

    @property
    def fallback(self) -> float | None:
        """What an answer with no parsable number is scored as: the training answers' mean."""
        return sum(self.train_values) / len(self.train_values) if self.train_values else None

    @property
    def reference_numbers(self) -> list[float]:
        return [first_number(e.reference) for e in self.examples]

    @property
    def wanted(self) -> bool:
        return self.has_validation or self.test is not None or bool(self.pairs)


def task_of(data, tokenizer, spec: EvaluationSpec) -> Task:
    """The run's Task from the prepared data (data.prepare has checked the answers)."""
    rows = list(data.test)[: spec.max_samples] if data.test is not None else []
    if data.shape == "prompts":  # GRPO is judged by its rewards (the rules refuse evaluation metrics)
        return Task(spec=spec, examples=[], test=None, has_validation=False)
    if data.shape in ("preference", "unpaired"):
        return Task(spec=spec, examples=[], test=None, has_validation=data.eval is not None,
                    pairs=pairs_of(rows) if "preferenceAccuracy" in spec.metrics else [])
    task = Task(spec=spec, examples=examples_of(rows, tokenizer) if spec.metrics else [],
                test=data.test.select(range(len(rows))) if rows else None, has_validation=data.eval is not None)
    if spec.validation_metrics and data.eval is not None:
        task.validation_examples = examples_of(list(data.eval)[: spec.max_samples], tokenizer)
    if task.numeric or spec.baselines:
        # A stream is not read whole for them: its first training rows (streaming.BASELINE_ROWS_CAP).
        from ..data.streaming import BASELINE_ROWS_CAP

        train = examples_of(data.stream.sample(BASELINE_ROWS_CAP) if data.stream else list(data.train), tokenizer)
        task.train_prompts = [e.question for e in train]
        task.train_values = [first_number(e.reference) for e in train]
    return task


def _loss(trainer, dataset, prefix: str) -> float | None:
    metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=prefix) if dataset is not None else \
        trainer.evaluate(metric_key_prefix=prefix)
    value = metrics.get(f"{prefix}_loss")
    return float(value) if value is not None else None


def fill_unparsed(numbers: list[float | None], fallback: float | None) -> tuple[list[float | None], float]:
    """(each answer's number, with `fallback` for one that had none; the share that had one)."""
    rate = sum(n is not None for n in numbers) / len(numbers) if numbers else 0.0
    return [fallback if n is None else n for n in numbers], rate


def _answers(trainer, tokenizer, task: Task, cfg, examples: list[Example], metrics: list[str]) -> dict:
    """The model's answers to `examples`, scored on `metrics`."""
    answers = generate_answers(trainer.model, tokenizer, [e.prompt for e in examples], generation=task.spec.generation,
                               numeric_spec=task.spec.resolved_numeric, batch_size=cfg.training.batch_size,
                               seed=cfg.training.seed)
    out: dict = {"answers": answers.texts}
    numbers = references = None
    if task.numeric:
        out["numbers"] = answers.numbers
        numbers, out["parseRate"] = fill_unparsed(answers.numbers, task.fallback)
        references = [first_number(e.reference) for e in examples]
    out["metrics"] = scoring.score(metrics, answers.texts, [e.reference for e in examples], numbers, references)
    return out


def measure(trainer, tokenizer, task: Task, cfg, *, validation: bool = False) -> dict:
    """{"metrics": {name: value}, "answers", "numbers", "parseRate", "seconds"} of the model the trainer holds;
    with `validation`, also "validation": spec.validationMetrics on the validation rows."""
    started = time.monotonic()
    metrics: dict[str, float | None] = {}
    if task.has_validation:
        metrics["evalLoss"] = _loss(trainer, None, "eval")
    if task.test is not None:
        loss = _loss(trainer, task.test, "test")
        metrics["testLoss"] = loss
        if loss is not None:
            metrics["perplexity"] = math.exp(loss) if loss < MAX_PERPLEXITY_LOSS else math.inf
    if task.pairs:
        metrics["preferenceAccuracy"] = preference_accuracy(trainer.model, tokenizer, task.pairs)
    out: dict = {}
    if task.examples:
        out = _answers(trainer, tokenizer, task, cfg, task.examples, task.spec.metrics)
        metrics.update(out.pop("metrics"))
    if validation and task.validation_examples:
        scored = _answers(trainer, tokenizer, task, cfg, task.validation_examples, task.spec.validation_metrics)
        out["validation"] = scored["metrics"]
    return {"metrics": metrics, **out, "seconds": round(time.monotonic() - started, 3)}
