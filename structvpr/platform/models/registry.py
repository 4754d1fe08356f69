"""Aggregator registry: aggregators register by name; `VPRBranch` builds them by name."""

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


def list_aggregators() -> list[str]:
    return sorted(_AGGREGATORS)


def get_aggregator(name: str) -> Callable[..., nn.Module]:
    if name not in _AGGREGATORS:
        raise KeyError(f"unknown aggregator {name!r}; known: {', '.join(sorted(_AGGREGATORS))}")
    return _AGGREGATORS[name]
