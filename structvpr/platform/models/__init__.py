"""Models: timm backbones with VPR aggregators (GeM, NetVLAD, MixVPR) for the RGB student and the seg teacher."""

from structvpr.platform.models import aggregators  # noqa: F401  (registers the built-in aggregators)
from structvpr.platform.models.aggregators import GeM, MixVPR, NetVLAD
from structvpr.platform.models.branch import VPRBranch, create_branch
from structvpr.platform.models.inputs import (
    ColorJitter,
    flatten_views,
    normalize_rgb,
    rgb_to_tensor,
    seg_to_onehot,
)
from structvpr.platform.models.registry import get_aggregator, list_aggregators, register_aggregator

__all__ = [
    "ColorJitter", "GeM", "MixVPR", "NetVLAD", "VPRBranch", "create_branch", "flatten_views", "get_aggregator",
    "list_aggregators", "normalize_rgb", "register_aggregator", "rgb_to_tensor", "seg_to_onehot",
]
