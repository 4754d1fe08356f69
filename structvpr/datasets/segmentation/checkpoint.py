"""Segmentation checkpoints: one torch file holding the model recipe, its weights and its metrics."""

from __future__ import annotations

import os
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from structvpr.datasets.records import DatasetError, file_in_the_way
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


def check_target(path: Path) -> None:
    """Before training: `--out` names a file that is new, or a checkpoint of ours to replace; nothing else."""
    blocker = file_in_the_way(path.parent)
    if blocker is not None:
        raise CheckpointError(f"cannot write the checkpoint {path}: {blocker} is a file, not a folder")
    if path.is_dir():
        raise CheckpointError(f"--out {path} is a folder; name the checkpoint file to write, e.g. {path / 'seg.ckpt'}")
    if path.exists() or path.is_symlink():
        try:
            load_checkpoint(path)
        except CheckpointError:
            raise CheckpointError(f"--out {path} exists and is not a segmentation checkpoint; seg train replaces "
                                  "only its own checkpoints: choose another --out") from None


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
    wrong = _wrong_types(values)
    if wrong:
        raise CheckpointError(f"segmentation checkpoint {path} has {wrong}; it was not written by `structvpr seg train` "
                              "or was altered: train it again")
    for key in ("image_size", "mean", "std"):  # mean and std may be absent: the defaults apply
        if key in values:
            values[key] = tuple(values[key])
    return SegCheckpoint(**values)


def _numbers(value, count: int, kind: type) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == count and all(
        isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in value)


def _wrong_types(values: dict) -> str | None:
    """The first field of a checkpoint payload that is not what `seg train` writes, described; None if all are."""
    checks = {
        "arch": lambda v: isinstance(v, str) and v != "",
        "encoder": lambda v: isinstance(v, str) and v != "",
        "class_map": lambda v: isinstance(v, str),
        "num_classes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "image_size": lambda v: _numbers(v, 2, int),
        "state_dict": lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values()),
        "mean": lambda v: _numbers(v, 3, (int, float)),
        "std": lambda v: _numbers(v, 3, (int, float)),
        "metrics": lambda v: isinstance(v, dict),
    }
    for name, ok in checks.items():
        if name in values and not ok(values[name]):
            return f"a bad {name!r} ({type(values[name]).__name__}: {str(values[name])[:60]})"
    return None


def build_checked(ckpt: SegCheckpoint, path: str | Path) -> nn.Module:
    """The checkpoint's network with its weights; weights that do not fit its arch/encoder are a CheckpointError."""
    try:
        return ckpt.build()
    except Exception as exc:  # smp's KeyError for an unknown encoder, torch's RuntimeError for mismatched weights
        raise CheckpointError(
            f"segmentation checkpoint {path}: its weights do not build a {ckpt.arch}/{ckpt.encoder} model "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); train it again with `structvpr seg train`"
        ) from None
