"""Connecting to Ray: a cluster when RAY_ADDRESS (or `ray job submit`) names one, else a local instance."""

from __future__ import annotations

import logging
import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster RAY_ADDRESS names (`ray job submit` sets it), else start a local instance.

    Plain `ray.init()` would also join whatever `ray start` cluster last ran on
    this machine (its address file outlives it); naming "local" keeps a laptop
    run on the laptop unless the user asks for a cluster.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    if not os.environ.get("RAY_ADDRESS"):
        kwargs["address"] = "local"
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
