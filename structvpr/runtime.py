"""Connecting to Ray: a cluster when RAY_ADDRESS (or `ray job submit`) names one, else a local instance."""

from __future__ import annotations

import logging
import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start or join Ray once per process; quiet by default because our own progress bars say what matters."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": logging.WARNING, "log_to_driver": True}
    if not os.environ.get("RAY_ADDRESS") and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
