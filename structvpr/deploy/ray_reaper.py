"""Stops the Ray processes a local run started once its driver is gone, even when the driver was SIGKILLed.

Ray 2.60 stops its GCS and raylet when the driver of a local instance dies, but its dashboard
and runtime-env agents (grandchildren of the driver) were measured alive minutes later. This
watcher runs in its own session, notes the driver's Ray descendants every second while the
driver lives, and after it is gone terminates those that are still running. psutil matches each
pid with its start time, so a pid the system has given to another process is never signalled.

    python -m structvpr.deploy.ray_reaper DRIVER_PID
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

POLL_SECONDS = 1.0
GRACE_SECONDS = 3.0  # Ray's own shutdown goes first


def is_ray_process(proc: psutil.Process) -> bool:
    """A process of Ray's local instance: its binaries, its Python entry points, its workers and agents."""
    try:
        name, cmdline = proc.name(), " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return name.startswith(("ray::", "gcs_server", "raylet")) or "/site-packages/ray/" in cmdline


def ray_descendants(driver: psutil.Process) -> list[psutil.Process]:
    try:
        return [p for p in driver.children(recursive=True) if is_ray_process(p)]
    except psutil.Error:
        return []


def watch(driver_pid: int) -> list[psutil.Process]:
    """Ray processes under the driver, noted until the driver exits."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, psutil.Process] = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        seen.update({p.pid: p for p in ray_descendants(driver)})
        time.sleep(POLL_SECONDS)
    return list(seen.values())


def stop(processes: list[psutil.Process], timeout: float = 10.0) -> None:
    time.sleep(GRACE_SECONDS)
    alive = [p for p in processes if p.is_running()]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=timeout)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass


def start_for(driver_pid: int) -> subprocess.Popen:
    """The watcher for this driver, in a session of its own so that signals to the driver's group miss it."""
    return subprocess.Popen([sys.executable, "-m", "structvpr.deploy.ray_reaper", str(driver_pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


if __name__ == "__main__":
    stop(watch(int(sys.argv[1])))
