"""Model inputs: uint8 RGB and segmentation ids from the shards to float tensors, colour jitter, batch flattening."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from structvpr.datasets.class_maps import NUM_CATEGORIES, VOID

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_stats(x: torch.Tensor, values: tuple[float, ...]) -> torch.Tensor:
    """A [3, 1, 1] tensor that broadcasts over [..., 3, H, W]."""
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(3, 1, 1)


def normalize_rgb(x: torch.Tensor) -> torch.Tensor:
    """Float RGB in [0, 1] to ImageNet mean/std, the statistics timm backbones expect."""
    return (x - _channel_stats(x, IMAGENET_MEAN)) / _channel_stats(x, IMAGENET_STD)


def rgb_to_tensor(rgb: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """uint8 [..., 3, H, W] to float: ImageNet-normalised, or in [0, 1] with normalize=False (for jitter first)."""
    if rgb.dtype != torch.uint8:
        raise TypeError(f"RGB input must be uint8, got {rgb.dtype}")
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"RGB input must be [..., 3, H, W], got {tuple(rgb.shape)}")
    x = rgb.float().div_(255.0)
    return normalize_rgb(x) if normalize else x


def seg_to_onehot(ids: torch.Tensor, num_classes: int = NUM_CATEGORIES, drop_void: bool = False) -> torch.Tensor:
    """Category ids [..., H, W] to one-hot float [..., C, H, W]; drop_void: C - 1 channels, void pixels all-zero."""
    if ids.dtype.is_floating_point:
        raise TypeError(f"segmentation ids must be integers, got {ids.dtype}")
    ids = ids.long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"segmentation ids must lie in 0..{num_classes - 1}, got {int(ids.min())}..{int(ids.max())}")
    # scatter_ into a float tensor: 6.7x faster than F.one_hot's int64 tensor plus movedim and cast
    # (measured in bench/bench_teacher_input.py), and this runs on every teacher batch.
    onehot = torch.zeros(*ids.shape[:-2], num_classes, *ids.shape[-2:], device=ids.device)
    onehot.scatter_(-3, ids.unsqueeze(-3), 1.0)
    if drop_void:
        keep = [c for c in range(num_classes) if c != VOID]
        onehot = onehot[..., keep, :, :]
    return onehot


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, [B, 1, H, W], as torchvision computes it."""
    r, g, b = x.unbind(dim=-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


@dataclass
class ColorJitter:
    """Per-sample colour jitter on float RGB in [0, 1]; each factor is drawn from [1 - s, 1 + s].

    Runs on tensors (CPU or GPU) after decoding, so the reader stays model-agnostic,
    and draws from a caller's seeded generator so runs repeat exactly.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def _factors(self, strength: float, n: int, generator: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(n, generator=generator)  # drawn on the CPU so one generator serves any device
        return (1.0 + strength * (2.0 * u - 1.0)).to(x.device, x.dtype).view(n, 1, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: float [B, 3, H, W] in [0, 1]; returns a jittered copy, still in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"jitter expects [B, 3, H, W], got {tuple(x.shape)}")
        n = x.shape[0]
        x = (x * self._factors(self.brightness, n, generator, x)).clamp(0, 1)
        mean = _grayscale(x).mean(dim=(-2, -1), keepdim=True)
        x = ((x - mean) * self._factors(self.contrast, n, generator, x) + mean).clamp(0, 1)
        gray = _grayscale(x)
        return ((x - gray) * self._factors(self.saturation, n, generator, x) + gray).clamp(0, 1)


def flatten_views(x: torch.Tensor, places: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[P, K, ...] views and [P] place labels to [P*K, ...] and [P*K] labels (each place's label K times)."""
    if x.shape[0] != places.shape[0]:
        raise ValueError(f"{x.shape[0]} places of views but {places.shape[0]} labels")
    k = x.shape[1]
    return x.reshape(-1, *x.shape[2:]), places.repeat_interleave(k)
