"""Checkpoints in object storage: background upload, commit marker, retention, resume.

The layout (step directories, the commit marker) is the contract's
(`kubetune_contract.checkpoints`); each step directory holds the HF Trainer
checkpoint file for file (adapter or model shards, DeepSpeed's global_stepN/
shards, optimizer, scheduler, RNG and trainer state), and the marker is written
last with a manifest of every file's size and sha256. A step directory without
its marker is a partial upload: never resumed from, deleted once a newer step
is committed. "Latest" is the highest step with a marker whose files verify.

The uploader works on a hard-linked snapshot of the local checkpoint so the
Trainer can rotate (delete) its local copies meanwhile; hashing and uploading
run in one background thread, so the training loop only pays for the links.
Each commit is published (`TrainerMetrics.committed`) with the checkpoint's URI.

Several nodes: each node's local rank 0 runs an uploader for the files its
node wrote and records them in a part record; node 0's uploader commits once
every part is there (`checkpoint_parts`), and each node downloads node 0's
files and its own to resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from kubetune_contract.checkpoints import MARKER, checkpoint_uri, step_dir, step_of

from . import checkpoint_parts as parts
from .errors import CheckpointFailed
from .storage import Store, UnsafeKey, inside

log = logging.getLogger("kubetune.checkpoint")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(local: Path, step: int) -> dict:
    files = sorted(p for p in local.rglob("*") if p.is_file())
    return {
        "step": step,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [{"path": str(p.relative_to(local)), "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files],
    }


@dataclass
class Committed:
    step: int
    manifest: dict


def list_steps(store: Store) -> dict[int, str]:
    """step → directory name, committed or not."""
    out = {}
    for name in store.list_dirs():
        step = step_of(name)
        if step is not None:
            out[step] = name
    return out


def list_committed(store: Store) -> list[Committed]:
    out = []
    for step, name in sorted(list_steps(store).items()):
        raw = store.get_bytes(f"{name}/{MARKER}")
        if raw is None:
            continue
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("ignoring %s/%s: marker is not valid JSON", name, MARKER)
            continue
        out.append(Committed(step, manifest))
    return out


def snapshot(src: Path, dst: Path) -> None:
    """Hard-link every file of src under dst (copy where links are impossible)."""
    for p in src.rglob("*"):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, target)
            except OSError:
                shutil.copy2(p, target)


def download(store: Store, committed: Committed, dst: Path, node: int = 0) -> Path:
    """Fetch what `node` needs of a committed checkpoint and verify every file against its manifest."""
    name = step_dir(committed.step)
    dst.mkdir(parents=True, exist_ok=True)
    for f in parts.files_for_node(committed.manifest, node):
        try:
            target = inside(dst, f["path"])
        except UnsafeKey as exc:
            raise CheckpointFailed(f"{store.uri}/{name}: {exc}") from None
        if not (target.is_file() and target.stat().st_size == f["size"] and sha256_file(target) == f["sha256"]):
            store.get_file(f"{name}/{f['path']}", target)
        if target.stat().st_size != f["size"] or sha256_file(target) != f["sha256"]:
            raise CheckpointFailed(f"{store.uri}/{name}/{f['path']}: checksum mismatch after download")
    (dst / ".kubetune-verified").write_text(str(committed.step))
    return dst


def try_download(store: Store, committed: Committed, dst: Path, node: int = 0) -> bool:
    """download(), False (and nothing left behind) when a file does not verify."""
    try:
        download(store, committed, dst, node)
        return True
    except CheckpointFailed as exc:
        log.error("%s; trying an older checkpoint", exc)
        shutil.rmtree(dst, ignore_errors=True)
        return False


def fetch_latest(store: Store, dst_root: Path, node: int = 0) -> tuple[int, Path] | None:
    """Download the newest committed checkpoint that verifies; older ones are the fallback."""
    for committed in reversed(list_committed(store)):
        dst = dst_root / step_dir(committed.step)
        if try_download(store, committed, dst, node):
            return committed.step, dst
    return None


class Uploader:
    """Uploads checkpoints in order in one background thread and commits each."""

    def __init__(self, store: Store, *, keep_last: int, staging: Path, metrics=None, retry_seconds: float = 600.0, background: bool = True,
                 node: int = 0, nodes: int = 1, owner: dict | None = None):
        self.store = store
        # {"uid", "fingerprint", "fields"}: which run wrote each commit, with what settings.
        self.owner = owner
        # Node 0 (where torchrun puts global rank 0) commits; the others upload their part.
        self.node, self.nodes = node, nodes
        self.keep_last = keep_last
        self.staging = staging
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.background = background
        self.last_committed: int | None = None
        self.failed: list[int] = []
        # training.keepBest: the step with the best validation loss, never
        # superseded before upload nor deleted by retention.
        self.protected: int | None = None
        self._queue: deque[tuple[int, Path]] = deque()
        self._busy = False
        self._cv = threading.Condition()
        self._closed = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="checkpoint-uploader", daemon=True)
            self._thread.start()

    # -- called from the training loop --------------------------------------------------
    def protect(self, step: int) -> None:
        """Keep this step (the best so far) whatever keepLast says; the previous best is released."""
        self.protected = step

    def submit(self, local: Path, step: int) -> None:
        snap = self.staging / step_dir(step)
        if snap.exists():  # same step saved twice (e.g. SIGTERM right after a periodic save)
            return
        snapshot(local, snap)
        if not self.background:
            self._upload(step, snap)
            return
        with self._cv:
            # A newer checkpoint supersedes older ones still waiting (store down):
            # upload the freshest state first instead of a growing backlog.
            kept = deque()
            while self._queue:
                old_step, old_snap = self._queue.popleft()
                if old_step == self.protected:
                    kept.append((old_step, old_snap))  # the best checkpoint is uploaded whatever comes after
                    continue
                log.warning("checkpoint step %d superseded by step %d before upload", old_step, step)
                shutil.rmtree(old_snap, ignore_errors=True)
            self._queue = kept
            self._queue.append((step, snap))
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything submitted is committed or given up; False on timeout."""
        if not self.background:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cv.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        done = self.wait(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        return done

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed and not self._queue:
                    return
                step, snap = self._queue.popleft()
                self._busy = True
            try:
                self._upload(step, snap)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _failed_attempt(self) -> None:
        if self.metrics:
            self.metrics.checkpoint_upload_failures.inc()

    def _newer_waiting(self, step: int) -> bool:
        with self._cv:
            return any(queued > step for queued, _ in self._queue)

    def _upload(self, step: int, snap: Path) -> None:
        start = time.monotonic()
        try:
            manifest = self._upload_part(step, snap, start + self.retry_seconds)
            if self.node != 0:
                if self.metrics:
                    self.metrics.checkpoint_upload_seconds.observe(time.monotonic() - start)
                log.info("checkpoint step %d: node %d's part uploaded (%d files, %.1fs)", step, self.node, len(manifest["files"]), time.monotonic() - start)
                return
            self._commit(step, start + self.retry_seconds)
        except parts.Superseded:
            log.warning("checkpoint step %d superseded by a newer one before every node's part arrived", step)
            return
        except Exception as exc:  # noqa: BLE001 - an upload failure must never crash training
            self.failed.append(step)
            if self.metrics:
                self.metrics.checkpoint_upload_failures.inc()
            log.error("checkpoint step %d could not be committed to %s: %s: %s", step, self.store.uri, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
            return
        finally:
            shutil.rmtree(snap, ignore_errors=True)
        if self.node == 0:
            self._committed(step, time.monotonic() - start)

    def _upload_part(self, step: int, snap: Path, deadline: float) -> dict:
        """This node's files, then its part record."""
        name = step_dir(step)
        manifest = build_manifest(snap, step)
        for f in manifest["files"]:
            self.store.put_file(f"{name}/{f['path']}", snap / f["path"], deadline_s=max(1.0, deadline - time.monotonic()), on_retry=self._failed_attempt)
        parts.write_part(self.store.child(name), step, self.node, manifest["files"], max(1.0, deadline - time.monotonic()), self._failed_attempt)
        return manifest

    def _commit(self, step: int, deadline: float) -> None:
        """Once every node's part is there: the marker, with every node's files."""
        step_store = self.store.child(step_dir(step))
        parts.wait_for_parts(step_store, self.nodes, deadline, superseded=lambda: self._newer_waiting(step))
        manifest = parts.merged_manifest(step_store, step, self.nodes)
        if self.owner:
            manifest["owner"] = self.owner
        # The marker goes last: its presence is what makes the step resumable.
        step_store.put_bytes(MARKER, json.dumps(manifest, indent=1).encode(), deadline_s=max(1.0, deadline - time.monotonic()), on_retry=self._failed_attempt)

    def _committed(self, step: int, elapsed: float) -> None:
        self.last_committed = step if self.last_committed is None else max(self.last_committed, step)
        if self.metrics:
            self.metrics.checkpoint_upload_seconds.observe(elapsed)
            self.metrics.committed(self.last_committed, checkpoint_uri(self.store.uri, self.last_committed))
        log.info("checkpoint step %d committed to %s/%s (%d nodes, %.1fs)", step, self.store.uri, step_dir(step), self.nodes, elapsed)
        try:
            self._retain()
        except Exception as exc:  # noqa: BLE001 - retention is best effort, retried next commit
            log.warning("checkpoint retention failed: %s", exc)

    def _retain(self) -> None:
        # Best effort with a short deadline: an outage must not hold up the
        # next upload (retention runs again after every commit).
        store = self.store.with_deadline(10.0)
        steps = list_steps(store)
        committed = [c.step for c in list_committed(store)]
        newest = max(committed) if committed else None
        for old in committed[: -self.keep_last]:
            if old == self.protected:
                continue  # training.keepBest's best checkpoint is the output: never deleted
            # Marker first: a half-deleted step is then merely "uncommitted".
            store.delete(f"{step_dir(old)}/{MARKER}")
            store.delete_prefix(step_dir(old))
            log.info("checkpoint step %d deleted (keepLast %d)", old, self.keep_last)
        for step, name in steps.items():
            if newest is not None and step < newest and step not in committed:
                store.delete_prefix(name)  # an abandoned partial upload
