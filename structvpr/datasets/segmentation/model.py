"""Build the segmentation network (segmentation-models-pytorch) that predicts the structural categories."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from structvpr.datasets.class_maps import NUM_CATEGORIES
from structvpr.datasets.segmentation.train_config import DEFAULT_ARCH, DEFAULT_ENCODER

# FPN + resnet18 trains about 1.7x faster than Unet + resnet18 on a 2-core CPU at the same
# resolution; its 1/4-resolution head is fine for the coarse category maps the teacher reads.
# Encoders are trained from scratch or loaded from our checkpoints: ImageNet statistics are
# kept as the input normalisation so that users can switch to pretrained encoders unchanged.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model(
    arch: str = DEFAULT_ARCH,
    encoder: str = DEFAULT_ENCODER,
    num_classes: int = NUM_CATEGORIES,
    encoder_weights: str | None = None,
) -> nn.Module:
    """An smp model; `encoder` is an smp encoder name or a timm one as 'tu-<timm name>'."""
    import segmentation_models_pytorch as smp

    return smp.create_model(
        arch, encoder_name=encoder, encoder_weights=encoder_weights, in_channels=3, classes=num_classes
    )


def input_multiple(model: nn.Module) -> int:
    """Side lengths the model accepts must be multiples of this (its output stride)."""
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", 32) or 32)


def pad_to_multiple(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad the bottom and right of a (..., H, W) tensor; cropping the output back undoes it."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), value=value)


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) in 0..255 -> float, normalised per channel."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t
