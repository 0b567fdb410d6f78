"""Container logs as the kubelet writes them (CRI format, one file per
container start under ``<run dir>/node/pod-logs/<ns>_<pod>_<uid>/<container>/<n>.log``),
readable after the pod is gone.

The kubelet removes a pod's logs with the pod; a test often wants the log of an
attempt the Job controller or Kueue already replaced (which step it resumed
from, why it stopped). :class:`LogKeeper` hard-links every log file it sees
into ``<run dir>/node/kept-logs`` (the same inode: what the container writes
later is there too), looking every ``interval`` seconds, so a log survives its
pod. Only a container whose pod is deleted less than ``interval`` after it
started can be missed.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path


def parse_cri(text: str) -> str:
    """The container's output from CRI log lines (``<time> <stream> <P|F> <text>``):
    partial lines (P) join the next one."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        content = parts[3] if len(parts) == 4 else ""
        out.append(content if parts[2] == "P" else content + "\n")
    return "".join(out)


class LogKeeper:
    """Keeps every container log of a node beyond its pod's life (see module)."""

    def __init__(self, pod_logs: Path, kept: Path, interval: float = 0.2):
        self.pod_logs, self.kept, self.interval = Path(pod_logs), Path(kept), interval
        self._stop = threading.Event()
        self._seen: set[tuple[int, int]] = set()  # (device, inode)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="node-log-keeper", daemon=True)

    def start(self) -> "LogKeeper":
        self.kept.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sweep()
            self._stop.wait(self.interval)

    def sweep(self) -> None:
        """Link every log file not kept yet (also called before a read)."""
        with self._lock:
            for path in self.pod_logs.glob("*/*/*.log*"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) in self._seen:
                    continue
                pod_dir, container = path.parent.parent.name, path.parent.name
                namespace, pod, uid = pod_dir.split("_", 2)
                target = self.kept / namespace / pod / uid / container
                target.mkdir(parents=True, exist_ok=True)
                restart = path.name.split(".", 1)[0]
                try:
                    os.link(path, target / f"{restart}-{st.st_ino}.log")
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    continue
                self._seen.add((st.st_dev, st.st_ino))

    def pods(self, namespace: str, prefix: str = "") -> list[str]:
        """Names of the pods of ``namespace`` (starting with ``prefix``) whose logs are kept."""
        self.sweep()
        root = self.kept / namespace
        return sorted(d.name for d in root.glob(f"{prefix}*")) if root.exists() else []

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Every start of the container's output, oldest first ("" if it never
        logged); of the newest pod of that name; ``container`` defaults to the
        pod's first (by name)."""
        self.sweep()
        uids = sorted((self.kept / namespace / pod).glob("*"), key=lambda p: p.stat().st_mtime)
        if not uids:
            return ""
        containers = sorted(p for p in uids[-1].iterdir() if p.is_dir())
        d = uids[-1] / container if container else (containers[0] if containers else None)
        if d is None or not d.exists():
            return ""
        files = sorted(d.glob("*.log"), key=lambda p: (int(p.name.split("-")[0]), p.stat().st_ctime))
        return "".join(parse_cri(f.read_text(errors="replace")) for f in files)
