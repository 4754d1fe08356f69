"""Starting and stopping the services we run (Ray nodes, mlflow server) by PID: never by name, never others'."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_env(extra: dict | None = None) -> dict:
    """This interpreter's bin folder first on PATH, so `structvpr` and `ray` resolve to this install."""
    env = os.environ.copy()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # A Ray 2.60 head turns token auth on; its CLI clients (ray status, ray job submit) only send the
    # token when told to. Respect a mode the user set.
    env.setdefault("RAY_AUTH_MODE", "token")
    env.update(extra or {})
    return env


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A service in its own process group, so stopping it takes its children and nothing else."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or venv_env(), start_new_session=True)


def stop_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group that `spawn` made for pid, then SIGKILL whatever is left after the timeout.

    `ray start --block` leaves its GCS running after SIGTERM (measured), so the SIGKILL is routine there.
    """
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != pid:  # only groups we created (start_new_session makes the leader's pid the group id)
        raise RuntimeError(f"process {pid} does not lead its own group; refusing to signal group {pgid}")
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # reap our own child; its children are reparented and reaped by init
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process left in the group."""
    import psutil

    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.info["pid"]) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def wait_until(check, timeout: float, what: str, log: Path | None = None, process: subprocess.Popen | None = None) -> None:
    """Wait for check() to hold; give up at the timeout, or at once when `process` (the service) has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it was ready" + _log_tail(log))
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s" + _log_tail(log))


def _log_tail(log: Path | None) -> str:
    tail = log.read_text()[-3000:] if log and log.is_file() else ""
    return f"; end of {log}:\n{tail}" if tail else ""


def save_state(path: Path, state: dict) -> None:
    path.write_text(json.dumps(state, indent=1))


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: nothing was started from this folder")
    return json.loads(path.read_text())
