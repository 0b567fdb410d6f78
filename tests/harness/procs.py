"""Process plumbing shared by the harness: spawn a server with its own log file
and process group, wait for it to become ready, stop it reliably.

Every child gets its own session (process group) so that stopping it also stops
anything it forked. Children of a short-lived owner (pytest) also get
``PR_SET_PDEATHSIG`` through ``setpriv --pdeathsig KILL`` so that they die with
their owner even when the owner is killed with SIGKILL and no finaliser runs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


def setup_output(env_var: str, script: Path, timeout: float = 1800) -> Path:
    """The cache path an idempotent setup script (hack/...) prints last: what
    ``env_var`` names when hack/test.sh has exported it, else the script's
    answer (it builds or installs on first use, answers at once afterwards)."""
    given = os.environ.get(env_var)
    if given:
        return Path(given)
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} failed: {out.stderr[-1000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class ComponentFailed(RuntimeError):
    """A harness component did not come up; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all held open while choosing)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
    cwd: str | None = None,
) -> subprocess.Popen:
    """Start ``argv`` in its own session, stdout+stderr appended to ``log_path``.
    With ``die_with_parent``, returns once the death signal is armed."""
    if die_with_parent:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    if die_with_parent:
        _await_exec_past_setpriv(proc.pid)
    return proc


_SETPRIV = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")


def _await_exec_past_setpriv(pid: int) -> None:
    """Until setpriv has exec'd the command: it arms PR_SET_PDEATHSIG just
    before, and a parent that dies before that leaves an orphan that no signal
    reaches (seen on a loaded machine). Popen returns once setpriv itself runs."""
    def past_setpriv() -> bool:
        try:
            return os.readlink(f"/proc/{pid}/exe") != _SETPRIV
        except OSError:  # exited already (a zombie has no exe): nothing is left to arm
            return True
    wait_until(past_setpriv, timeout=30, what=f"pid {pid} past setpriv", interval=0.002)


# Our own children, so that stop_group can reap them (no zombies while the
# owning process lives on, e.g. pytest between sessions of a long run).
_children: dict[int, subprocess.Popen] = {}


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``ready()`` until it is true; raise ComponentFailed with the log tail
    when ``proc`` exits early or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused, 503, ...
            pass
        if proc is not None and proc.poll() is not None:
            raise ComponentFailed(
                f"{what} exited with code {proc.returncode} before it was ready; "
                f"log {log_path}:\n{log_tail(log_path) if log_path else ''}"
            )
        if time.monotonic() > deadline:
            raise ComponentFailed(
                f"{what} not ready after {timeout:.0f}s; log {log_path}:\n"
                f"{log_tail(log_path) if log_path else ''}"
            )
        time.sleep(interval)


def pids_with_env(env: Mapping[str, str], command_part: bytes) -> list[int]:
    """PIDs of this machine's processes whose environment holds every `env` entry
    and whose command line contains `command_part` (a container's processes
    carry its pod's env, and the host sees them: a test finds a pod's processes by it)."""
    want = {f"{k}={v}".encode() for k, v in env.items()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if want <= environ and command_part in cmd:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stop_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group ``pgid``, SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pgid):
            break
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child = _children.pop(pgid, None)
    if child is not None:
        child.wait()
