"""A local Ray instance started by structvpr listens on loopback only and leaves nothing behind a killed driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

DRIVER = """
import json, os, sys, time
import psutil
from structvpr.runtime import LOOPBACK_SWITCH, ensure_ray
ensure_ray(num_cpus=1)
switch_after = os.environ.get(LOOPBACK_SWITCH)
time.sleep(4)  # the raylet starts its agents after init returns
from structvpr.deploy.ray_reaper import ray_descendants
me = psutil.Process()
procs = ray_descendants(me)
listening = [c.laddr.ip for p in procs + [me] for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
print(json.dumps({"pids": [[p.pid, p.create_time()] for p in procs], "listening": listening,
                  "switch_after": switch_after}), flush=True)
time.sleep(600)
"""


def still_running(pids: list) -> list[int]:
    alive = []
    for pid, created in pids:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="module")
def driver():
    """One driver for the module (starting Ray takes 15 s here); the SIGKILL test, last in the file, ends it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env)
    report = json.loads(proc.stdout.readline())
    yield proc, report
    proc.kill()
    proc.wait()
    for pid in still_running(report["pids"]):  # a failed test must not leave our own processes behind
        os.kill(pid, signal.SIGKILL)


def test_local_ray_listens_on_loopback_only(driver):
    _, report = driver
    assert report["pids"] and report["listening"]
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in report["listening"]), report["listening"]


def test_the_loopback_switch_does_not_leak_to_later_processes(driver):
    """Left set, it made `ray start` refuse to join worker nodes into the test cluster (multi-node PANIC)."""
    _, report = driver
    assert report["switch_after"] is None


def test_nothing_outlives_a_sigkilled_driver(driver):
    proc, report = driver
    names = {pid: psutil.Process(pid).name() for pid, _ in report["pids"]}
    assert any(n.startswith("ray::DashboardAgent") for n in names.values()), names  # the ones that used to stay
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while still_running(report["pids"]) and time.time() < deadline:
        time.sleep(0.5)
    assert not still_running(report["pids"]), {pid: names[pid] for pid in still_running(report["pids"])}


def test_starting_ray_from_a_pool_thread_is_refused_with_the_remedy():
    """A local instance started from a thread dies with that thread (Ray's PR_SET_PDEATHSIG): measured as
    zombie gcs_server and raylet processes right after the thread ended, so it is refused instead."""
    code = ("import threading\nfrom structvpr.runtime import ensure_ray\nfailed = []\n"
            "def start():\n    try: ensure_ray(num_cpus=1)\n    except RuntimeError as exc: failed.append(str(exc))\n"
            "t = threading.Thread(target=start); t.start(); t.join()\nprint(failed)\n"
            "import sys; print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "call structvpr.runtime.ensure_ray() on the main thread" in done.stdout, done.stdout + done.stderr
    assert done.stdout.split()[-1] == "False", "refused without importing Ray (its first import sets loopback)"
