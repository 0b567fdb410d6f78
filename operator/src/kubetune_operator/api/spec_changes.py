"""Which FineTuneJob spec fields may change once the job exists, and when: the
CEL transition rules the API server applies to every update, so a change is
either taken into account or refused with the field named, never accepted
and ignored.

- What the training Job's pod template is made of (image, resources,
  parallelism, placement, credentials, the locations whose volumes and
  environment the pods get) is fixed once the Job exists: a Job's template
  cannot change. Before that (the job was refused, or waits for a Secret) anything goes.
- What only the trainer's config says (hyper-parameters, adapter, evaluation,
  tracking, checkpoint frequency, output formats) may change while no trainer
  runs on it: before the Job exists, while queued, or suspended before the
  first checkpoint. The operator then renders the ConfigMap again; after
  that, a run continues only with the settings its checkpoints were made with
  (`kubetune_contract.checkpoints`): create another job with
  `checkpoint.resumeFrom` instead.
- `suspend` and `serving` may always change (`model`, `dataset`, `method` and
  `objective` are immutable outright, `spec`).

All of it is one root rule behind two guards, not a rule per field: the API
server evaluates every root rule on every write, the status subresource's
included, and a status write (the spec unchanged) should cost one comparison.
A refusal names each refused field in one message, under `spec`.
"""

from __future__ import annotations

IN_POD_TEMPLATE = ("image", "resources", "distributed", "credentials", "priorityClassName", "queueName", "backoffLimit",
                   "activeDeadlineSeconds", "ttlSecondsAfterFinished", "checkpoint.uri", "output.uri", "evaluation.testUri")
CONFIG_ONLY = ("training", "lora", "quantization", "preference", "kto", "grpo", "evaluation", "tracking", "checkpoint", "output")

# No training Job yet: just created, or refused (Valid=False: a Secret missing, the policy, a conflict).
_NO_JOB = ("!has(oldSelf.status) || !has(oldSelf.status.phase) || (has(oldSelf.status.conditions) && "
           "oldSelf.status.conditions.exists(c, c.type == 'Valid' && c.status == 'False'))")
# No trainer runs on the config: no Job yet, queued, or suspended before its first checkpoint.
_NO_TRAINER = (f"{_NO_JOB} || oldSelf.status.phase == 'Queued' || "
               "(oldSelf.status.phase == 'Suspended' && !has(oldSelf.status.checkpoint))")


def _same(path: str) -> str:
    """CEL: the field at `path` (under spec) unchanged, set or unset alike. (has()
    chains, not optionals: the API server cannot bound an optional's cost.)"""
    parts = path.split(".")

    def present(root: str) -> str:
        return " && ".join(f"has({root}.spec.{'.'.join(parts[:i + 1])})" for i in range(len(parts)))
    return f"(({present('self')}) ? (({present('oldSelf')}) && self.spec.{path} == oldSelf.spec.{path}) : !({present('oldSelf')}))"


_POD_TEMPLATE_MESSAGE = ("spec.{path} is part of the training Job's pod template, fixed once the Job exists; "
                         "delete and re-create the job to change it")
_CONFIG_MESSAGE = ("spec.{path} can change only while no trainer runs on it (before the Job exists, while Queued, or "
                   "Suspended before the first checkpoint); to continue with other settings, create a new job with "
                   "checkpoint.resumeFrom set to this one's status.checkpoint.uri")

# What makes every field's condition true at once, cheapest first. The API server
# evaluates the root rules on every write, the status subresource's included (it
# validates the whole object; on /status the spec is the stored one), and CEL's
# `||` stops at its first true term: a first status write stops at the first guard
# (no status yet: no Job), every later status write at the second.
GUARDS = ("!has(oldSelf.status)", "self.spec == oldSelf.spec")


def field_conditions() -> list[tuple[str, str, str]]:
    """(spec path, CEL condition over self and oldSelf, message when it is false): one per field that may not change at will."""
    return ([(path, f"{_same(path)} || {_NO_JOB}", _POD_TEMPLATE_MESSAGE.format(path=path)) for path in IN_POD_TEMPLATE]
            + [(path, f"{_same(path)} || {_NO_TRAINER}", _CONFIG_MESSAGE.format(path=path)) for path in CONFIG_ONLY])


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def refusal_message(conditions: list[tuple[str, str, str]]) -> str:
    """CEL: one sentence per refused field, concatenated (the API server trims the
    trailing space). Strings added together, not a list filtered and joined: the
    API server bounds an expression's cost when the CRD is applied, and it cannot
    bound the length of a list's elements (a join is costed as if each were a
    request-sized string: the CRD was refused, 100x over its budget), while each
    term here is one of two literals."""
    return " + ".join(f"(({condition}) ? '' : {_quoted(message + '. ')})" for _, condition, message in conditions)


def change_rules() -> list[dict]:
    """The root-level transition rules of the FineTuneJob CRD: one rule, every field's
    condition behind the guards (each guard implies them all), so a status write costs
    one comparison; the message names each refused field, in the order declared above."""
    conditions = field_conditions()
    every_field = " && ".join(f"({condition})" for _, condition, _ in conditions)
    return [{"rule": " || ".join([*GUARDS, f"({every_field})"]), "fieldPath": ".spec",
             "messageExpression": refusal_message(conditions),
             "message": "a spec field changed that the training Job's pod template or a running trainer depends on "
                        "(api/spec_changes.py in kubetune lists them)"}]
