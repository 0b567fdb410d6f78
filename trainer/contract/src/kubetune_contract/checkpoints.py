"""The checkpoint layout in object storage, owned here and nowhere else.

Each run keeps its checkpoints under its own prefix, `<checkpoint uri>/run-<job
uid>/` (`run_root`; a run without a UID, `kubetune run`, uses the checkpoint
URI itself): a job re-created with the same name, or a re-applied sweep's
trial, is another run and never resumes, overwrites or deletes the
checkpoints of the one before. Continuing another run is explicit
(`checkpoint.resumeFrom`). Under a run's prefix:

    step-00000040/                  one checkpoint: the HF Trainer's directory, file for file,
        ...                         every node's files side by side (their names differ by rank)
        _parts/node-0.json          each node's record of what it uploaded, written after its
        _parts/node-1.json          files: {"step", "node", "files": [{"path","size","sha256"}]}
        COMMITTED.json              written last, by global rank 0, once every node's part exists:
                                    {"step", "nodes", "files": [{"path","size","sha256","node"}],
                                     "owner": {"uid", "fingerprint", "fields"}, ...}
    base-eval.json                  the base model's evaluation, computed once per job

A step directory without its marker is a partial upload: never resumed from.
A marker without `nodes` (one node) lists node 0's files without a `node`.
`owner` says which run wrote it (the job's UID) and with what settings (a
`fingerprint` of every config field that changes what training computes, and
each field's own digest, so a mismatch names the fields that differ).
"""

from __future__ import annotations

import hashlib
import json
import re

MARKER = "COMMITTED.json"
PARTS = "_parts"
BASE_EVALUATION = "base-eval.json"
# Under a sweep's shared prefix (TrainerConfig.shared): one base evaluation per
# fingerprint of what it measured, for every trial that measures the same.
SHARED_BASE_EVALUATION = "base-evaluation/{fingerprint}.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_PART = re.compile(r"^node-(\d+)\.json$")


def step_dir(step: int) -> str:
    """The directory name of one checkpoint (8 digits, so names sort by step)."""
    return f"step-{step:08d}"


def step_of(name: str) -> int | None:
    """The step a directory name stands for, or None when it is not a checkpoint."""
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def checkpoint_uri(root: str, step: int) -> str:
    """The URI of one checkpoint under a job's checkpoint root."""
    return f"{root.rstrip('/')}/{step_dir(step)}"


def part_key(node: int) -> str:
    """Where one node's part record lives inside a step directory."""
    return f"{PARTS}/node-{node}.json"


def node_of_part(name: str) -> int | None:
    """The node a part record's file name stands for, or None."""
    match = _PART.match(name)
    return int(match.group(1)) if match else None


RUN_PREFIX = "run-"
# The trainer-config sections whose every field changes what training computes
# (the data, the model and adapter, the objective and its hyper-parameters, the
# parallelism); where the results go, how often to checkpoint, evaluation and
# tracking do not.
FINGERPRINTED = ("model", "dataset", "method", "objective", "preference", "kto", "grpo", "lora", "quantization", "training",
                 "distributed")
# ...except these, which change what is logged or evaluated, not the weights.
NOT_FINGERPRINTED = ("training.logEverySteps", "training.evalEverySteps", "model.adapterFrom")


def run_root(checkpoint_uri: str, uid: str | None) -> str:
    """Where one run's checkpoints live: its own prefix under the checkpoint URI."""
    return f"{checkpoint_uri.rstrip('/')}/{RUN_PREFIX}{uid}" if uid else checkpoint_uri.rstrip("/")


def _leaves(value, path: str):
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _leaves(value[key], f"{path}.{key}" if path else key)
    else:
        yield path, value


def fingerprint(config: dict) -> dict:
    """{"fingerprint": hex, "fields": {path: short digest}} of a trainer config (its JSON)."""
    fields = {}
    for section in FINGERPRINTED:
        for path, value in _leaves(config.get(section), section):
            if not path.startswith(NOT_FINGERPRINTED):
                fields[path] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
    whole = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return {"fingerprint": whole, "fields": fields}


def differing_fields(mine: dict, theirs: dict) -> list[str]:
    """The fields two fingerprints disagree on (sorted; a field only one has counts)."""
    a, b = mine.get("fields") or {}, theirs.get("fields") or {}
    return sorted(path for path in set(a) | set(b) if a.get(path) != b.get(path))


def split_step_uri(uri: str) -> tuple[str, int | None]:
    """(the run root, the step) of a checkpoint's URI; (uri, None) for a run root itself."""
    root, _, last = uri.rstrip("/").rpartition("/")
    step = step_of(last)
    return (root, step) if step is not None else (uri.rstrip("/"), None)
