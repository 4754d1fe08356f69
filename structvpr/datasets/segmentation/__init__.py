"""Segmentation: train, checkpoint and run the model that turns RGB into structural category maps.

Names are imported on first use: listing labelled data must not pay for importing torch and smp.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "model",
    "DEFAULT_ARCH": "train_config",
    "DEFAULT_ENCODER": "train_config",
    "SegTrainConfig": "train_config",
    "SegCheckpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "LabelledPair": "labelled_data",
    "LabelledSet": "labelled_data",
    "list_labelled": "labelled_data",
    "labelled_splits": "labelled_data",
    "read_pair": "labelled_data",
    "train_segmentation": "train",
    "segmentation_scores": "train",
    "SegmentationPredictor": "predictor",
    "SegmentationModelError": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
