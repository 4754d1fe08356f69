"""Metric loss on place batches: a pytorch-metric-learning loss and miner, optionally across all DDP ranks."""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import nn

# GSV-Cities / MixVPR settings for MultiSimilarity in VPR (pml's own defaults are alpha=2, base=0.5).
DEFAULT_LOSS_KWARGS = {"MultiSimilarityLoss": {"alpha": 1.0, "beta": 50.0, "base": 0.0}}
DEFAULT_MINER_KWARGS = {"MultiSimilarityMiner": {"epsilon": 0.1}}


def _ddp_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _build(module, name: str, kwargs: dict | None, defaults: dict):
    if not hasattr(module, name):
        raise ValueError(f"pytorch-metric-learning has no {module.__name__.rsplit('.', 1)[-1]} named {name!r}")
    return getattr(module, name)(**(defaults.get(name, {}) if kwargs is None else kwargs))


class MetricLoss(nn.Module):
    """`loss(embeddings, labels)` with pairs mined by `miner` (None or "none": all pairs).

    With distributed=True and torch.distributed up, loss and miner see every rank's
    embeddings (pml gathers them; only this rank's part carries gradients). pml then
    returns the full-batch loss times the world size, so that DDP's gradient averaging
    yields the full-batch gradient: divide the value by `world_size()` to log it.
    """

    def __init__(self, loss: str = "MultiSimilarityLoss", miner: str | None = "MultiSimilarityMiner",
                 loss_kwargs: dict | None = None, miner_kwargs: dict | None = None, distributed: bool = False):
        super().__init__()
        self.loss = _build(losses, loss, loss_kwargs, DEFAULT_LOSS_KWARGS)
        use_miner = miner not in (None, "none")
        self.miner = _build(miners, miner, miner_kwargs, DEFAULT_MINER_KWARGS) if use_miner else None
        self.distributed = distributed
        if distributed:
            self.dist_loss = DistributedLossWrapper(self.loss)
            self.dist_miner = DistributedMinerWrapper(self.miner) if self.miner is not None else None
        self.last_num_pairs: int | None = None  # positive + negative pairs mined in the last call (for logging)

    def world_size(self) -> int:
        """The factor by which the returned value exceeds the full-batch loss (1 unless distributed)."""
        return _ddp_world_size() if self.distributed else 1

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # pml's wrappers fail (miner) or warn (loss) outside DDP: a distributed job run on
        # one process without a process group uses the plain loss.
        gathered = self.distributed and _ddp_world_size() > 1
        loss_fn = self.dist_loss if gathered else self.loss
        miner_fn = (self.dist_miner if gathered else self.miner) if self.miner is not None else None
        indices = miner_fn(embeddings, labels) if miner_fn is not None else None
        self.last_num_pairs = None if indices is None else int(len(indices[0]) + len(indices[2]))
        return loss_fn(embeddings, labels, indices)
