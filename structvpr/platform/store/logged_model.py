"""The model logged to an MLflow run and registered as a new version of structvpr-teacher / structvpr-student."""

from __future__ import annotations

import numpy as np
import torch

REGISTERED_NAMES = {"teacher": "structvpr-teacher", "student": "structvpr-student"}
PIP_REQUIREMENTS = ["torch==2.14.1", "timm==1.0.31"]


def log_model(model, image_size: tuple[int, int], register_as_kind: str | None):
    """The pytorch flavour, pickled so it loads at any input size (pt2 export fixes the shape)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    width, height = image_size
    channels = model.spec["in_chans"]
    example = np.zeros((1, channels, height, width), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                    signature=infer_signature(example, output), pip_requirements=PIP_REQUIREMENTS,
                                    registered_model_name=REGISTERED_NAMES[register_as_kind] if register_as_kind else None)
    return getattr(info, "registered_model_version", None)
