"""Loading a trained branch from what users name: a checkpoint folder or file, runs:/..., or models:/name@alias."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.store.checkpoint import ModelSourceError, branch_from_state, load_state
from structvpr.platform.store.logged_model import load_logged_branch

__all__ = ["ModelSourceError", "check_fits_shards", "load_branch"]


def load_branch(ref: str, device="cpu") -> tuple[nn.Module, dict]:
    """The model ready for inference on `device` (eval, channels_last), and what is known of its training."""
    if ref.startswith(("runs:/", "models:/")):
        return _from_mlflow(ref, device)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelSourceError(f"model {ref!r} not found: give a checkpoint folder or state.pt, runs:/<run id>/model, "
                               "or models:/<name>@<alias>")
    state = load_state(path)  # data only: a ModelSourceError naming the file for anything else
    model = branch_from_state(state, str(path)).to(device).for_inference()
    trained_on = state.get("trained_on")
    return model, dict(trained_on) if isinstance(trained_on, dict) else {}


def _from_mlflow(ref: str, device) -> tuple[nn.Module, dict]:
    """spec.json + weights.safetensors of the logged model: nothing of the artifact is unpickled or run."""
    model, trained_on = load_logged_branch(ref)
    return model.to(device).for_inference(), trained_on


def check_fits_shards(model: nn.Module, trained_on: dict, manifest: Manifest, role: str) -> None:
    """A teacher must read the shards' class count at the shards' image size."""
    categories = manifest.num_categories
    if role == "teacher":
        if getattr(model, "input_kind", None) != "seg":
            raise ModelSourceError("the teacher must be a segmentation branch (trained with `structvpr train teacher`)")
        if model.num_classes != categories:
            raise ModelSourceError(f"the teacher reads {model.num_classes} classes but the shards hold {categories}; "
                                   "train the teacher on shards with the same class map")
    size = trained_on.get("image_size")
    if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2
                                 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ModelSourceError(f"the {role}'s record of its training holds image_size {size!r}, not [width, height]; "
                               "it was not written by structvpr: retrain or re-register the model")
    if size and tuple(size) != manifest.image_size:
        width, height = manifest.image_size
        raise ModelSourceError(f"the {role} was trained at {size[0]}x{size[1]} but the shards are "
                               f"{width}x{height}; rebuild the shards with --size "
                               f"{size[0]}x{size[1]} or retrain")
