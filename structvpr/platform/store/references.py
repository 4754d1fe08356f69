"""Loading a trained branch from what users name: a checkpoint folder or file, runs:/..., or models:/name@alias."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.store.checkpoint import branch_from_state, load_state


class ModelSourceError(ValueError):
    """A model reference that cannot be loaded; the message names it and says what is accepted."""


def load_branch(ref: str, device="cpu") -> tuple[nn.Module, dict]:
    """The model ready for inference on `device` (eval, channels_last), and what is known of its training."""
    if ref.startswith(("runs:/", "models:/")):
        return _from_mlflow(ref, device)
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelSourceError(f"model {ref!r} not found: give a checkpoint folder or state.pt, runs:/<run id>/model, "
                               "or models:/<name>@<alias>")
    try:
        state = load_state(path)
    except (FileNotFoundError, RuntimeError, KeyError) as exc:
        raise ModelSourceError(f"{ref} is not a structvpr checkpoint ({exc})") from None
    model = branch_from_state(state).to(device).for_inference()
    return model, dict(state.get("trained_on", {}))


def _from_mlflow(ref: str, device) -> tuple[nn.Module, dict]:
    import mlflow
    import mlflow.pytorch

    try:
        model = mlflow.pytorch.load_model(ref, map_location=device)
    except Exception as exc:  # MLflow raises many types for a bad URI; all mean the same to the user
        raise ModelSourceError(f"cannot load {ref} from MLflow at {mlflow.get_tracking_uri()}: {exc}") from None
    return model.to(device).for_inference(), dict(getattr(model, "trained_on", {}) or {})


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
    if size and tuple(size) != manifest.image_size:
        width, height = manifest.image_size
        raise ModelSourceError(f"the {role} was trained at {size[0]}x{size[1]} but the shards are "
                               f"{width}x{height}; rebuild the shards with --size "
                               f"{size[0]}x{size[1]} or retrain")
