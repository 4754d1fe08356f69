"""Training state in a checkpoint: model, optimizer, scheduler, epoch, RNG streams; enough to resume exactly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from structvpr.platform.models import create_branch

STATE_FILE = "state.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (checkpoints hold plain state dicts that load without DDP)."""
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(folder: str | Path, model: nn.Module, optimizer, scheduler, epoch: int, extra: dict) -> Path:
    """Write state.pt into folder; `epoch` is the number of finished epochs."""
    path = Path(folder) / STATE_FILE
    branch = unwrap(model)
    torch.save({
        "spec": branch.spec, "model": branch.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "epoch": epoch, "rng": rng_state(), **extra,
    }, path)
    return path


def load_state(folder_or_file: str | Path, map_location="cpu") -> dict:
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {STATE_FILE} at {folder_or_file}: not a structvpr training checkpoint")
    # weights_only=False: the state holds RNG tuples and numpy arrays; these files are our own.
    return torch.load(path, map_location=map_location, weights_only=False)


def branch_from_state(state: dict) -> nn.Module:
    spec = dict(state["spec"])
    model = create_branch(spec.pop("backbone"), spec.pop("in_chans"), spec.pop("aggregator"), spec.pop("dim"), **spec)
    model.load_state_dict(state["model"])
    return model
