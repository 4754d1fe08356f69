"""Aggregator registry and the branch factory: `create_branch(backbone, in_chans, aggregator, dim)`."""

from __future__ import annotations

from typing import Callable

from torch import nn

_AGGREGATORS: dict[str, Callable[..., nn.Module]] = {}


def register_aggregator(name: str):
    """Class decorator: the aggregator becomes available to `create_branch` under `name`.

    An aggregator is built as `cls(in_channels, dim, feature_hw=None, **kwargs)` and maps a
    feature map [B, C, H, W] to an L2-normalised descriptor [B, dim].
    """

    def decorate(cls):
        if name in _AGGREGATORS and _AGGREGATORS[name] is not cls:
            raise ValueError(f"aggregator {name!r} is already registered")
        _AGGREGATORS[name] = cls
        return cls

    return decorate


def _load_builtin() -> None:
    # Importing the module runs its decorators; done lazily so this file has no import cycle.
    from structvpr.platform.models import aggregators  # noqa: F401


def list_aggregators() -> list[str]:
    _load_builtin()
    return sorted(_AGGREGATORS)


def get_aggregator(name: str) -> Callable[..., nn.Module]:
    _load_builtin()
    if name not in _AGGREGATORS:
        raise KeyError(f"unknown aggregator {name!r}; known: {', '.join(sorted(_AGGREGATORS))}")
    return _AGGREGATORS[name]


def create_branch(backbone: str, in_chans: int, aggregator: str, dim: int, **kwargs) -> nn.Module:
    """A `VPRBranch`: timm `backbone` reading `in_chans` channels, then `aggregator` to an L2-normalised [B, dim].

    kwargs go to `VPRBranch` (image_hw, out_index, pretrained, num_classes, input_kind,
    aggregator_kwargs, backbone_kwargs). `branch.spec` holds everything needed to rebuild it.
    """
    from structvpr.platform.models.branch import VPRBranch

    return VPRBranch(backbone=backbone, in_chans=in_chans, aggregator=aggregator, dim=dim, **kwargs)
