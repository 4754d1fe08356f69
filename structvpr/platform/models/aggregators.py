"""Aggregators: a backbone feature map [B, C, H, W] to an L2-normalised global descriptor [B, dim]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from structvpr.platform.models.registry import register_aggregator


@register_aggregator("gem")
class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent p, then a linear projection to `dim`."""

    def __init__(self, in_channels: int, dim: int, feature_hw: tuple[int, int] | None = None,
                 p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps
        self.proj = nn.Linear(in_channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)  # below 1 the mean stops being a pooling of activations and gradients blow up
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
        return F.normalize(self.proj(pooled), dim=-1)


@register_aggregator("netvlad")
class NetVLAD(nn.Module):
    """NetVLAD (soft-assigned residuals to `clusters` centroids), flattened, then a linear reduction to `dim`."""

    def __init__(self, in_channels: int, dim: int, feature_hw: tuple[int, int] | None = None,
                 clusters: int = 16, alpha: float = 30.0):
        super().__init__()
        self.alpha = alpha
        self.assign = nn.Conv2d(in_channels, clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(F.normalize(torch.randn(clusters, in_channels), dim=1))
        self.reduce = nn.Linear(clusters * in_channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)  # per-location normalisation, as in the NetVLAD paper
        soft = self.assign(x).flatten(2).softmax(dim=1)  # [B, K, N]
        feats = x.flatten(2)  # [B, C, N]
        vlad = torch.einsum("bkn,bcn->bkc", soft, feats) - soft.sum(-1).unsqueeze(-1) * self.centroids
        vlad = F.normalize(F.normalize(vlad, dim=2).flatten(1), dim=1)  # intra- then global normalisation
        return F.normalize(self.reduce(vlad), dim=-1)

    @torch.no_grad()
    def init_clusters(self, local_features: torch.Tensor, iters: int = 10, generator: torch.Generator | None = None):
        """Optional k-means start from local features [N, C] (e.g. a few batches of backbone maps).

        Random centroids train, but slowly; the NetVLAD paper starts from k-means.
        """
        feats = F.normalize(local_features.float(), dim=1)
        k = self.centroids.shape[0]
        if feats.shape[0] < k:
            raise ValueError(f"need at least {k} local features, got {feats.shape[0]}")
        centroids = feats[torch.randperm(feats.shape[0], generator=generator)[:k]].clone()
        for _ in range(iters):
            nearest = (feats @ centroids.T).argmax(dim=1)
            for c in range(k):
                members = feats[nearest == c]
                if len(members):
                    centroids[c] = members.mean(dim=0)
            centroids = F.normalize(centroids, dim=1)
        self.centroids.copy_(centroids)
        self.assign.weight.copy_((self.alpha * centroids).view_as(self.assign.weight))


class FeatureMixer(nn.Module):
    """One MixVPR block: a residual MLP across the flattened spatial positions of every channel."""

    def __init__(self, positions: int, mlp_ratio: float = 1.0):
        super().__init__()
        hidden = max(1, int(positions * mlp_ratio))
        self.mix = nn.Sequential(nn.LayerNorm(positions), nn.Linear(positions, hidden), nn.ReLU(),
                                 nn.Linear(hidden, positions))
        for m in self.mix:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


@register_aggregator("mixvpr")
class MixVPR(nn.Module):
    """MixVPR (Ali-bey et al., 2023), scaled down: `depth` feature mixers, then channel and row projections.

    The descriptor is out_channels x out_rows = dim. The mixers act on H*W positions, so
    the map size is fixed at construction (`feature_hw`); maps of another size (serving
    other image sizes) are average-pooled to it first.
    """

    def __init__(self, in_channels: int, dim: int, feature_hw: tuple[int, int] | None = None,
                 depth: int = 4, mlp_ratio: float = 1.0, out_rows: int = 4):
        super().__init__()
        if feature_hw is None:
            raise ValueError("MixVPR mixes over the feature map's positions: build the branch with image_hw=(H, W)")
        if dim % out_rows:
            raise ValueError(f"MixVPR needs dim divisible by out_rows ({out_rows}), got {dim}")
        self.feature_hw = tuple(feature_hw)
        positions = self.feature_hw[0] * self.feature_hw[1]
        self.mixers = nn.Sequential(*[FeatureMixer(positions, mlp_ratio) for _ in range(depth)])
        self.channel_proj = nn.Linear(in_channels, dim // out_rows)
        self.row_proj = nn.Linear(positions, out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.feature_hw:
            x = F.adaptive_avg_pool2d(x, self.feature_hw)
        x = self.mixers(x.flatten(2))  # [B, C, N]
        x = self.channel_proj(x.transpose(1, 2))  # [B, N, C']
        x = self.row_proj(x.transpose(1, 2))  # [B, C', rows]
        return F.normalize(x.flatten(1), dim=-1)
