"""VPRBranch and its factory `create_branch`: a timm backbone's feature map through an aggregator (student and teacher)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from structvpr.datasets.class_maps import NUM_CATEGORIES
import structvpr.platform.models.aggregators  # noqa: F401  (registers the built-in aggregators)
from structvpr.platform.models.inputs import ColorJitter, normalize_rgb, rgb_to_tensor, seg_to_onehot
from structvpr.platform.models.registry import get_aggregator

INPUT_KINDS = ("rgb", "seg")
# What `VPRBranch.spec` holds: the arguments create_branch rebuilds a branch from (never `pretrained`).
SPEC_KEYS = ("backbone", "in_chans", "aggregator", "dim", "image_hw", "out_index", "num_classes", "input_kind",
             "aggregator_kwargs", "backbone_kwargs")


def _input_kind(in_chans: int, num_classes: int, input_kind: str | None) -> str:
    """'rgb' for 3 channels, 'seg' otherwise, checked against the channel count."""
    kind = input_kind or ("rgb" if in_chans == 3 else "seg")
    if kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {kind!r}")
    if kind == "rgb" and in_chans != 3:
        raise ValueError(f"an RGB branch reads 3 channels, got in_chans={in_chans}")
    if kind == "seg" and in_chans not in (num_classes, num_classes - 1):
        raise ValueError(f"a segmentation branch reads {num_classes} channels (with void) "
                         f"or {num_classes - 1} (without), got in_chans={in_chans}")
    return kind


def _create_backbone(name: str, in_chans: int, out_index: int | None, pretrained: bool,
                     backbone_kwargs: dict) -> tuple[nn.Module, int]:
    """The timm model and its output channels: the last stage, or stage `out_index` via features_only."""
    if out_index is None:
        model = timm.create_model(name, pretrained=pretrained, in_chans=in_chans, num_classes=0, global_pool="",
                                  **backbone_kwargs)
        return model, model.num_features
    # features_only drops the stages after out_index: earlier maps are larger (MixVPR uses
    # ResNet's stage 3) and cost less to compute.
    model = timm.create_model(name, pretrained=pretrained, in_chans=in_chans, features_only=True,
                              out_indices=(out_index,), **backbone_kwargs)
    return model, model.feature_info.channels()[-1]


class VPRBranch(nn.Module):
    """Backbone -> aggregator -> L2-normalised [B, dim]; `preprocess` turns shard tensors into its input.

    Args:
        backbone: timm model name (CNNs: the output must be a [B, C, H, W] map).
        in_chans: 3 for RGB; num_classes (with void) or num_classes - 1 (without) for segmentation.
        aggregator: a registered aggregator name (see `list_aggregators()`).
        dim: descriptor size.
        image_hw: training input (H, W); needed by aggregators that fix the map size (MixVPR).
        out_index: take the map of this backbone stage (timm features_only) instead of the last one.
        pretrained: timm weights (downloads: keep False offline and in tests).
        num_classes: number of segmentation categories including void (0).
        input_kind: 'rgb' or 'seg'; inferred from in_chans when None.
    """

    def __init__(self, backbone: str, in_chans: int, aggregator: str = "gem", dim: int = 256,
                 image_hw: tuple[int, int] | None = None, out_index: int | None = None, pretrained: bool = False,
                 num_classes: int = NUM_CATEGORIES, input_kind: str | None = None,
                 aggregator_kwargs: dict | None = None, backbone_kwargs: dict | None = None):
        super().__init__()
        self.input_kind = _input_kind(in_chans, num_classes, input_kind)
        self.num_classes = num_classes
        self.drop_void = self.input_kind == "seg" and in_chans == num_classes - 1
        self.out_index = out_index
        self.backbone, channels = _create_backbone(backbone, in_chans, out_index, pretrained, backbone_kwargs or {})
        feature_hw = self._probe_feature_hw(in_chans, image_hw) if image_hw else None
        self.aggregator = get_aggregator(aggregator)(channels, dim, feature_hw=feature_hw, **(aggregator_kwargs or {}))
        self.dim = dim
        # Everything create_branch needs to rebuild this module before loading a state dict.
        self.spec = dict(backbone=backbone, in_chans=in_chans, aggregator=aggregator, dim=dim,
                         image_hw=tuple(image_hw) if image_hw else None, out_index=out_index,
                         num_classes=num_classes, input_kind=self.input_kind,
                         aggregator_kwargs=dict(aggregator_kwargs or {}), backbone_kwargs=dict(backbone_kwargs or {}))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map [B, C, h, w]."""
        out = self.backbone(x)
        feats = out[-1] if isinstance(out, (list, tuple)) else out
        if feats.dim() != 4:
            raise ValueError(f"backbone must give a [B, C, H, W] map, got {tuple(feats.shape)}")
        return feats

    @torch.no_grad()
    def _probe_feature_hw(self, in_chans: int, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Map size for this input size, measured rather than derived from strides (padding rounds differ)."""
        was_training = self.backbone.training
        self.backbone.eval()  # batch norm refuses one sample with a 1x1 map in training mode
        hw = tuple(self.features(torch.zeros(1, in_chans, *image_hw)).shape[-2:])
        self.backbone.train(was_training)
        return hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed float input [B, C, H, W] -> L2-normalised descriptors [B, dim]."""
        return self.aggregator(self.features(x))

    def preprocess(self, raw: torch.Tensor, jitter: ColorJitter | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Shard tensors to model input: uint8 RGB [..., 3, H, W] or category ids [..., H, W] -> float [..., C, H, W].

        Move `raw` to the device first: uint8 travels four times lighter than float.
        Jitter applies to RGB only (segmentation is the condition-invariant input).
        """
        if self.input_kind == "seg":
            return seg_to_onehot(raw, self.num_classes, drop_void=self.drop_void)
        x = rgb_to_tensor(raw, normalize=False)
        if jitter is not None:
            x = jitter(x.reshape(-1, *x.shape[-3:]), generator).reshape(x.shape)
        return normalize_rgb(x)

    def embed(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw shard tensors [B, ...] straight to descriptors (evaluation and serving)."""
        x = self.preprocess(raw)
        if getattr(self, "inference_channels_last", False):  # models pickled before this attribute lack it
            x = x.contiguous(memory_format=torch.channels_last)
        return self(x)

    def for_inference(self) -> "VPRBranch":
        """Eval mode, weights and inputs in channels_last: the format to serve and evaluate in.

        On the CPU, NCHW at batch 1 sends some of resnet18's convolutions to PyTorch's slow im2col
        path instead of oneDNN (16.5 -> 13.7 ms per 160x120 image on one core here; 12.1 -> 9.4 ms
        at batch 32); on CUDA it is the layout tensor cores read. Not for a model still training.
        """
        self.eval()
        self.to(memory_format=torch.channels_last)
        self.inference_channels_last = True
        return self


def create_branch(backbone: str, in_chans: int, aggregator: str, dim: int, **kwargs) -> nn.Module:
    """A `VPRBranch`: timm `backbone` reading `in_chans` channels, then `aggregator` to an L2-normalised [B, dim].

    kwargs go to `VPRBranch` (image_hw, out_index, pretrained, num_classes, input_kind,
    aggregator_kwargs, backbone_kwargs). `branch.spec` holds everything needed to rebuild it.
    """
    return VPRBranch(backbone=backbone, in_chans=in_chans, aggregator=aggregator, dim=dim, **kwargs)
