"""Segmentation checkpoints: one torch file holding the model recipe, its weights and its metrics."""

from __future__ import annotations

import os
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from structvpr.datasets.records import DatasetError
from structvpr.datasets.segmentation.model import IMAGENET_MEAN, IMAGENET_STD, build_model

FORMAT = "structvpr-segmentation/1"


class CheckpointError(DatasetError):
    """A file that is not a segmentation checkpoint written by `structvpr seg train`."""


@dataclass
class SegCheckpoint:
    arch: str
    encoder: str
    num_classes: int
    class_map: str  # the map that read the training labels; outputs are always category ids
    image_size: tuple[int, int]  # (W, H) the model was trained at, and predicts at
    state_dict: dict
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    metrics: dict = field(default_factory=dict)

    def build(self) -> nn.Module:
        model = build_model(self.arch, self.encoder, self.num_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()


_FIELDS = [f.name for f in fields(SegCheckpoint)]
_REQUIRED = [f.name for f in fields(SegCheckpoint) if f.default is MISSING and f.default_factory is MISSING]


def save_checkpoint(ckpt: SegCheckpoint, path: str | Path) -> Path:
    """Write atomically: a crash mid-save never leaves a truncated checkpoint under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not asdict(): it would deep-copy every tensor of the state dict.
    payload = {"format": FORMAT, **{k: getattr(ckpt, k) for k in _FIELDS}}
    payload["image_size"] = list(ckpt.image_size)
    payload["mean"], payload["std"] = list(ckpt.mean), list(ckpt.std)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> SegCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"segmentation checkpoint {path} does not exist")
    try:
        # weights_only: a checkpoint is tensors and plain values; never run pickled code from a file.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a segmentation checkpoint (torch.load failed: {type(exc).__name__}); "
            "pass a file written by `structvpr seg train`, a hub id, or 'gt'"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a segmentation checkpoint (no '{FORMAT}' format tag); "
            "pass a file written by `structvpr seg train`, a hub id, or 'gt'"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"segmentation checkpoint {path} lacks {missing}: written by another version?")
    values = {k: payload[k] for k in _FIELDS if k in payload}
    values["image_size"] = tuple(values["image_size"])
    values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
    return SegCheckpoint(**values)
