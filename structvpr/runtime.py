"""Connecting to Ray: a cluster when RAY_ADDRESS (or `ray job submit`) names one, else a local instance.

A local instance listens on 127.0.0.1 only, and a watcher stops its processes when the driver dies.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager

# Ray reads this switch once, when it is first imported: "0" makes a local instance take 127.0.0.1 as
# its node address, so that every server it starts (GCS, raylet, agents, workers) listens on loopback
# only; without it Ray 2.60 binds them to all interfaces. It would also stop `ray start` from joining
# nodes into a cluster, so it is set only while a local instance is imported and started, then restored.
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

log = logging.getLogger(__name__)


@contextmanager
def loopback_only():
    """Within: Ray, imported here for the first time, starts local instances on 127.0.0.1."""
    previous = os.environ.get(LOOPBACK_SWITCH)
    os.environ.setdefault(LOOPBACK_SWITCH, "0")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOOPBACK_SWITCH, None)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster RAY_ADDRESS names (`ray job submit` sets it), else start a local instance.

    Plain `ray.init()` would also join whatever `ray start` cluster last ran on
    this machine (its address file outlives it); naming "local" keeps a laptop
    run on the laptop unless the user asks for a cluster.
    """
    if threading.current_thread() is not threading.main_thread():
        _refuse_to_start_in_a_thread()
    if os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, logging_level=logging.WARNING, log_to_driver=True)
        return
    imported_before = "ray" in sys.modules
    with loopback_only():
        import ray

        if ray.is_initialized():
            return
        if imported_before:
            log.warning("Ray was imported before structvpr started it: its local instance listens on all interfaces")
        ray.init(address="local", num_cpus=num_cpus, ignore_reinit_error=True, logging_level=logging.WARNING,
                 log_to_driver=True)
    from structvpr.deploy.ray_reaper import start_for

    start_for(os.getpid())


def _refuse_to_start_in_a_thread() -> None:
    """Ray starts a local instance's processes with PR_SET_PDEATHSIG, which Linux fires when the *thread* that
    started them ends: started from a pool thread, the instance dies with it. Jobs run at once from threads
    (fold teachers, the demo's students) join the instance their caller started on the main thread."""
    ray = sys.modules.get("ray")  # not imported here: the first import must come under loopback_only
    if ray is None or not ray.is_initialized():
        raise RuntimeError("Ray was asked to start from a thread other than the main one, and would stop when that "
                           "thread ends: call structvpr.runtime.ensure_ray() on the main thread before starting "
                           "jobs from threads")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
