"""The checkpoint layout in object storage, owned here and nowhere else.

Under a job's checkpoint URI:

    step-00000040/                  one checkpoint: the HF Trainer's directory, file for file,
        ...                         every node's files side by side (their names differ by rank)
        _parts/node-0.json          each node's record of what it uploaded, written after its
        _parts/node-1.json          files: {"step", "node", "files": [{"path","size","sha256"}]}
        COMMITTED.json              written last, by global rank 0, once every node's part exists:
                                    {"step", "nodes", "files": [{"path","size","sha256","node"}], ...}
    base-eval.json                  the base model's evaluation, computed once per job

A step directory without its marker is a partial upload: never resumed from.
A marker without `nodes` (one node) lists node 0's files without a `node`.
"""

from __future__ import annotations

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
