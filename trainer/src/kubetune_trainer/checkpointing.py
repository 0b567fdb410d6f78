"""Checkpoints in object storage: background upload, commit marker, retention, resume.

Layout under `checkpoint.uri`:

    step-00000040/                  the HF Trainer checkpoint dir, file for file
        adapter_model.safetensors   (or model shards / DeepSpeed global_stepN/ shards)
        optimizer.pt scheduler.pt rng_state*.pth trainer_state.json ...
        COMMITTED.json              written last: {"step", "files": [{"path","size","sha256"}], ...}

A step directory without COMMITTED.json is a partial upload: never resumed
from, deleted once a newer step is committed. "Latest" is the highest step with
a marker whose files verify.

The uploader works on a hard-linked snapshot of the local checkpoint so the
Trainer can rotate (delete) its local copies meanwhile; hashing and uploading
run in one background thread, so the training loop only pays for the links.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointFailed
from .storage import Store

log = logging.getLogger("kubetune.checkpoint")

MARKER = "COMMITTED.json"
STEP_RE = re.compile(r"^step-(\d+)$")


def step_dir(step: int) -> str:
    return f"step-{step:08d}"


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
        m = STEP_RE.match(name)
        if m:
            out[int(m.group(1))] = name
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


def download(store: Store, committed: Committed, dst: Path) -> Path:
    """Fetch a committed checkpoint and verify every file against its manifest."""
    name = step_dir(committed.step)
    dst.mkdir(parents=True, exist_ok=True)
    for f in committed.manifest["files"]:
        target = dst / f["path"]
        if not (target.is_file() and target.stat().st_size == f["size"] and sha256_file(target) == f["sha256"]):
            store.get_file(f"{name}/{f['path']}", target)
        if target.stat().st_size != f["size"] or sha256_file(target) != f["sha256"]:
            raise CheckpointFailed(f"{store.uri}/{name}/{f['path']}: checksum mismatch after download")
    (dst / ".kubetune-verified").write_text(str(committed.step))
    return dst


def fetch_latest(store: Store, dst_root: Path) -> tuple[int, Path] | None:
    """Download the newest committed checkpoint that verifies; older ones are the fallback."""
    for committed in reversed(list_committed(store)):
        dst = dst_root / step_dir(committed.step)
        try:
            return committed.step, download(store, committed, dst)
        except CheckpointFailed as exc:
            log.error("%s; trying an older checkpoint", exc)
            shutil.rmtree(dst, ignore_errors=True)
    return None


class Uploader:
    """Uploads checkpoints in order in one background thread and commits each."""

    def __init__(self, store: Store, *, keep_last: int, staging: Path, metrics=None, retry_seconds: float = 600.0, background: bool = True):
        self.store = store
        self.keep_last = keep_last
        self.staging = staging
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.background = background
        self.last_committed: int | None = None
        self.failed: list[int] = []
        self._queue: deque[tuple[int, Path]] = deque()
        self._busy = False
        self._cv = threading.Condition()
        self._closed = False
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._run, name="checkpoint-uploader", daemon=True)
            self._thread.start()

    # -- called from the training loop --------------------------------------------------
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
            while self._queue:
                old_step, old_snap = self._queue.popleft()
                log.warning("checkpoint step %d superseded by step %d before upload", old_step, step)
                shutil.rmtree(old_snap, ignore_errors=True)
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

    def _failed_attempt(self, exc: BaseException) -> None:
        if self.metrics:
            self.metrics.checkpoint_upload_failures.inc()

    def _upload(self, step: int, snap: Path) -> None:
        start = time.monotonic()
        name = step_dir(step)
        try:
            manifest = build_manifest(snap, step)
            deadline = start + self.retry_seconds
            for f in manifest["files"]:
                self.store.put_file(f"{name}/{f['path']}", snap / f["path"], deadline_s=max(1.0, deadline - time.monotonic()), on_retry=self._failed_attempt)
            # The marker goes last: its presence is what makes the step resumable.
            self.store.put_bytes(f"{name}/{MARKER}", json.dumps(manifest, indent=1).encode(), deadline_s=max(1.0, deadline - time.monotonic()), on_retry=self._failed_attempt)
        except Exception as exc:  # noqa: BLE001 - an upload failure must never crash training
            self.failed.append(step)
            if self.metrics:
                self.metrics.checkpoint_upload_failures.inc()
            log.error("checkpoint step %d could not be committed to %s: %s: %s", step, self.store.uri, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
            shutil.rmtree(snap, ignore_errors=True)
            return
        elapsed = time.monotonic() - start
        self.last_committed = step if self.last_committed is None else max(self.last_committed, step)
        if self.metrics:
            self.metrics.checkpoint_upload_seconds.observe(elapsed)
            self.metrics.last_committed_step.set(self.last_committed)
        log.info("checkpoint step %d committed to %s/%s (%d files, %.1fs)", step, self.store.uri, name, len(manifest["files"]), elapsed)
        shutil.rmtree(snap, ignore_errors=True)
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
            # Marker first: a half-deleted step is then merely "uncommitted".
            store.delete(f"{step_dir(old)}/{MARKER}")
            store.delete_prefix(step_dir(old))
            log.info("checkpoint step %d deleted (keepLast %d)", old, self.keep_last)
        for step, name in steps.items():
            if newest is not None and step < newest and step not in committed:
                store.delete_prefix(name)  # an abandoned partial upload
