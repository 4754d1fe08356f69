"""Training state in a checkpoint: model, optimizer, scheduler, epoch, RNG streams; enough to resume exactly.

The file holds tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None) and is read
with `torch.load(weights_only=True)`: a checkpoint a user points at is data, never code.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from structvpr.platform.models import create_branch
from structvpr.platform.models.branch import SPEC_KEYS

STATE_FILE = "state.pt"
# timm arguments that make it read or download weights: a spec from a file never passes them.
_FETCHING_KWARGS = {"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class ModelSourceError(ValueError):
    """A model reference that cannot be loaded; the message names it and says what is accepted."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (checkpoints hold plain state dicts that load without DDP)."""
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict:
    """Every RNG stream as plain data: numpy's key array becomes a list of ints."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "key": key.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value, where: str = "state"):
    """`value` as tensors and plain data (numpy scalars become Python numbers); anything else is a bug here."""
    if isinstance(value, np.generic):  # before _PLAIN: np.float64 is a float, but pickles as a numpy object
        return value.item()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}: a checkpoint holds only tensors and plain data")


def save_state(folder: str | Path, model: nn.Module, optimizer, scheduler, epoch: int, extra: dict) -> Path:
    """Write state.pt into folder; `epoch` is the number of finished epochs."""
    path = Path(folder) / STATE_FILE
    branch = unwrap(model)
    torch.save(plain({
        "spec": branch.spec, "model": branch.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "epoch": epoch, "rng": rng_state(), **extra,
    }), path)
    return path


def load_state(folder_or_file: str | Path, map_location="cpu") -> dict:
    """The state in a checkpoint folder or state.pt, read as data only; anything else is a ModelSourceError."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / STATE_FILE
    if not path.is_file():
        raise ModelSourceError(f"no {STATE_FILE} at {folder_or_file}: give a checkpoint folder or its {STATE_FILE}")
    try:
        with warnings.catch_warnings():  # a legacy pickle's protocol warning: the refusal below says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise ModelSourceError(f"{path} holds a pickled Python object ({found.group(1)}), which a structvpr "
                                   "checkpoint never does; refused without running it. Retrain with this version "
                                   "or pass a state.pt written by `structvpr train`") from None
        raise ModelSourceError(_not_a_checkpoint(path, "not a torch file")) from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, ... for files that are not torch files
        raise ModelSourceError(_not_a_checkpoint(path, f"{type(exc).__name__}: {_first_line(exc)}")) from None
    if not isinstance(state, dict) or not {"spec", "model"} <= set(state):
        what = f"a dict without {sorted({'spec', 'model'} - set(state))}" if isinstance(state, dict) \
            else f"a {type(state).__name__}"
        raise ModelSourceError(_not_a_checkpoint(path, f"it holds {what}"))
    return state


def _not_a_checkpoint(path: Path, why: str) -> str:
    return f"{path} is not a structvpr checkpoint ({why}); pass a checkpoint folder or state.pt written by `structvpr train`"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def branch_from_state(state: dict, source: str = "checkpoint") -> nn.Module:
    return build_branch(state["spec"], state["model"], source)


def _valid_spec(spec) -> bool:
    if not isinstance(spec, dict) or not {"backbone", "in_chans", "aggregator", "dim"} <= set(spec) <= set(SPEC_KEYS):
        return False
    kwargs = spec.get("backbone_kwargs") or {}
    return isinstance(kwargs, dict) and not _FETCHING_KWARGS & set(kwargs)


def build_branch(spec, weights: dict, source: str) -> nn.Module:
    """The branch `spec` describes, with `weights`; a spec or weights that do not fit are a ModelSourceError."""
    if not _valid_spec(spec):
        raise ModelSourceError(f"{source} has no valid branch spec (expected the keys {', '.join(SPEC_KEYS)}); "
                               "pass a model written by `structvpr train`")
    try:
        model = create_branch(**{**spec, "pretrained": False})
    except Exception as exc:  # timm, the aggregator registry and VPRBranch each raise their own types
        raise ModelSourceError(f"{source} describes a branch this version cannot build "
                               f"({type(exc).__name__}: {_first_line(exc)}); check the backbone and aggregator names") from None
    try:
        model.load_state_dict(weights)
    except Exception as exc:
        raise ModelSourceError(f"{source}: its weights do not fit the branch its spec describes "
                               f"({_first_line(exc)})") from None
    return model
