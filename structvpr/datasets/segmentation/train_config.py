"""Settings of `structvpr seg train`, one typed set of defaults for the command, the demo and the library call."""

from __future__ import annotations

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
        numbers = (self.epochs, self.batch_size, self.max_steps or 1, *self.image_size)
        if len(self.image_size) != 2 or min(numbers) < 1:
            raise ValueError(f"epochs, batch_size, max_steps and image_size (W, H) must be positive, got "
                             f"{self.epochs}, {self.batch_size}, {self.max_steps}, {self.image_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
