"""One checkpoint written by several nodes: each node's part record, and the
commit manifest global rank 0 builds once every part is there.

Every node's local rank 0 uploads the files its node wrote (the HF Trainer
writes the model and trainer state on global rank 0, each rank its own RNG
state and, under DeepSpeed ZeRO, its own shards), then writes its part record
(`kubetune_contract.checkpoints.part_key`). Node 0's uploader waits for every
node's record by polling storage, never by a collective: upload threads must
not take part in the training processes' collectives, which run on the main
threads in a fixed order. Only then is the marker written, so "latest
committed" means every rank's state is there.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable

from kubetune_contract.checkpoints import PARTS, node_of_part, part_key

from .errors import CheckpointFailed
from .storage import Store

log = logging.getLogger("kubetune.checkpoint")

POLL_START_S = 0.2
POLL_MAX_S = 2.0


class Superseded(Exception):
    """A newer checkpoint is waiting: this one's parts are no longer worth waiting for."""


def write_part(step_store: Store, step: int, node: int, files: list[dict], deadline_s: float, on_retry=None) -> None:
    record = {"step": step, "node": node, "files": files}
    step_store.put_bytes(part_key(node), json.dumps(record, indent=1).encode(), deadline_s=deadline_s, on_retry=on_retry)


def present_parts(step_store: Store) -> set[int]:
    """The nodes whose part record exists in this step directory."""
    names = (o.key.rsplit("/", 1)[-1] for o in step_store.list(PARTS))
    return {n for n in map(node_of_part, names) if n is not None}


def wait_for_parts(step_store: Store, nodes: int, deadline: float, superseded: Callable[[], bool],
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once every node's part record exists; CheckpointFailed at the deadline,
    Superseded as soon as a newer checkpoint waits for upload."""
    delay = POLL_START_S
    while True:
        missing = set(range(nodes)) - present_parts(step_store)
        if not missing:
            return
        if superseded():
            raise Superseded()
        if clock() >= deadline:
            raise CheckpointFailed(f"{step_store.uri}: no part from node(s) {', '.join(map(str, sorted(missing)))} "
                                   "before the upload deadline (checkpoint.uploadRetrySeconds)")
        sleep(delay)
        delay = min(POLL_MAX_S, delay * 2)


def merged_manifest(step_store: Store, step: int, nodes: int) -> dict:
    """The commit manifest: every node's files, each tagged with its node. Two
    nodes writing the same path with different bytes would leave one of them
    lost in storage: refused, never committed."""
    files: dict[str, dict] = {}
    for node in range(nodes):
        raw = step_store.get_bytes(part_key(node))
        record = json.loads(raw) if raw else None
        if not record or record.get("step") != step:
            raise CheckpointFailed(f"{step_store.uri}/{part_key(node)}: missing or not for step {step}")
        for f in record["files"]:
            seen = files.get(f["path"])
            if seen and seen["sha256"] != f["sha256"]:
                raise CheckpointFailed(f"{step_store.uri}/{f['path']}: written by node {seen['node']} and node {node} "
                                       "with different contents")
            files.setdefault(f["path"], {**f, "node": node})
    return {"step": step, "nodes": nodes, "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": sorted(files.values(), key=lambda f: f["path"])}


def files_for_node(manifest: dict, node: int) -> list[dict]:
    """What one node downloads to resume: node 0's files (model, optimizer and
    trainer state, what every rank reads) and its own ranks' files."""
    return [f for f in manifest["files"] if f.get("node", 0) in (0, node)]
