"""Settings of `structvpr seg train`, one typed set of defaults for the command, the demo and the library call."""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ARCH = "FPN"
DEFAULT_ENCODER = "resnet18"


@dataclass(frozen=True)
class SegTrainConfig:
    epochs: int = 10
    """Passes over the labelled train split."""
    image_size: tuple[int, int] = (160, 120)
    """Training size (width, height); images and labels are resized to it."""
    batch_size: int = 16
    arch: str = DEFAULT_ARCH
    """segmentation-models-pytorch architecture (FPN, Unet, ...)."""
    encoder: str = DEFAULT_ENCODER
    """Encoder name, trained from scratch."""
    lr: float = 1e-3
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many optimiser steps (None: all epochs)."""

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            size = "x".join(str(v) for v in self.image_size)
            raise ValueError(f"image_size (--size) must be WxH with both at least 8 pixels, got {size}")
        counts = {"epochs": self.epochs, "batch_size": self.batch_size, "max_steps": self.max_steps}
        for name, value in counts.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be at least 1, got {value}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr (--lr) must be a positive number, got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed (--seed) must be 0 or more, got {self.seed}")
