"""StructVPR sample weighting (our reading): weigh each sample's KD term by how teacher and student rank its positive.

For a training sample i, r_T and r_S are the ranks of its true positive (the best
gallery image of the same place, itself excluded) under the teacher's and the
student's descriptors. Ranks are taken over a gallery, not the batch: a teacher
ranks the positives of its own training batches first almost always, so an in-batch
partition leaves the noisy group empty and weighting collapses into a larger lambda.
The gallery is, e.g., a per-epoch cache of both models' descriptors of the whole
training database (same order, same place labels for both models).

Groups, with g = good_rank and n = noisy_rank (g <= n), tested in this order:
    noisy                        r_T > n                  weight 0 (the teacher is wrong: its advice is noise)
    teacher_right_student_wrong  r_T <= g and r_S > g     w_high (where distillation helps most)
    both_right                   r_T <= g and r_S <= g    w_low (little left to learn)
    other                        g < r_T <= n             w_mid (the teacher is roughly right)
A sample without any positive in the gallery gets r = G + 1 and is counted as
no_positive (it is also noisy unless n >= G + 1).

Weights are then scaled to average 1 over the batch (sum = B), so that tuning them
changes which samples the KD term listens to, not its overall strength (lambda's
job). If every weight is 0, zeros come back and counts["all_zero"] is 1.
The exact formula of the paper was not available to us; docs/METHOD.md says more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

GROUPS = ("noisy", "teacher_right_student_wrong", "both_right", "other")


@dataclass
class WeightingConfig:
    """Rank thresholds and group weights: the values Ray Tune searches."""

    good_rank: int = 1
    """A model is right on a sample when its true positive ranks at or above this (1: first)."""

    noisy_rank: int = 10
    """The teacher is wrong enough to be noise when the positive ranks below this; must be >= good_rank."""

    w_high: float = 2.0
    """Weight of teacher-right-student-wrong samples; must be the largest weight and positive."""

    w_mid: float = 1.0
    """Weight of the other samples (teacher roughly right: good_rank < r_T <= noisy_rank)."""

    w_low: float = 0.5
    """Weight of samples both models get right."""

    def __post_init__(self):
        self.good_rank = _as_rank("good_rank", self.good_rank)
        self.noisy_rank = _as_rank("noisy_rank", self.noisy_rank)
        if self.noisy_rank < self.good_rank:
            raise ValueError(f"noisy_rank ({self.noisy_rank}) must be >= good_rank ({self.good_rank})")
        for name in ("w_high", "w_mid", "w_low"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
            setattr(self, name, value)
        if self.w_high <= 0:
            raise ValueError("w_high must be positive: otherwise no sample that needs the teacher hears it")
        if self.w_high < max(self.w_mid, self.w_low):
            raise ValueError(f"w_high ({self.w_high}) must be the largest weight "
                             f"(w_mid {self.w_mid}, w_low {self.w_low})")

    def to_dict(self) -> dict:
        return asdict(self)


def _as_rank(name: str, value) -> int:
    """A rank >= 1; integral floats pass, since Tune's quantised spaces hand out floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _chunk_similarities(query: torch.Tensor, gallery: torch.Tensor, chunk_size: int):
    """(start, [B, c] similarities) over gallery chunks, so a large database never makes a [B, G] matrix."""
    for start in range(0, gallery.shape[0], chunk_size):
        yield start, query @ gallery[start:start + chunk_size].T


def _masks(query_labels, gallery_labels, self_ids, start, width):
    """Positive and negative masks [B, c] for one chunk, both without the query's own gallery entry."""
    cols = torch.arange(start, start + width, device=query_labels.device)
    not_self = cols.unsqueeze(0) != self_ids.unsqueeze(1)
    same = query_labels.unsqueeze(1) == gallery_labels[start:start + width].unsqueeze(0)
    return same & not_self, ~same & not_self


@torch.no_grad()
def rank_of_true_positive(query_desc: torch.Tensor, query_labels: torch.Tensor, gallery_desc: torch.Tensor,
                          gallery_labels: torch.Tensor, exclude_self_ids: torch.Tensor | None = None,
                          chunk_size: int = 65536) -> torch.Tensor:
    """Rank [B] (int64, 1 = best) of each query's best positive among the gallery, by inner product.

    rank = 1 + number of negatives strictly more similar than the best positive (ties
    favour the positive). exclude_self_ids [B] names each query's own gallery row
    (-1: not in the gallery). Queries without a positive get G + 1.
    """
    device = gallery_desc.device
    q, g = query_desc.to(device, torch.float32), gallery_desc.float()
    q_labels, g_labels = query_labels.to(device), gallery_labels.to(device)
    if exclude_self_ids is None:
        self_ids = torch.full((q.shape[0],), -1, dtype=torch.long, device=device)
    else:
        self_ids = exclude_self_ids.to(device, torch.long)
    neg_inf = torch.tensor(float("-inf"), device=device)
    best_pos = torch.full((q.shape[0],), float("-inf"), device=device)
    for start, sim in _chunk_similarities(q, g, chunk_size):
        pos, _ = _masks(q_labels, g_labels, self_ids, start, sim.shape[1])
        best_pos = torch.maximum(best_pos, torch.where(pos, sim, neg_inf).amax(dim=1))
    above = torch.zeros(q.shape[0], dtype=torch.long, device=device)
    for start, sim in _chunk_similarities(q, g, chunk_size):
        _, neg = _masks(q_labels, g_labels, self_ids, start, sim.shape[1])
        above += (neg & (sim > best_pos.unsqueeze(1))).sum(dim=1)
    ranks = above + 1
    return torch.where(torch.isinf(best_pos), torch.full_like(ranks, g.shape[0] + 1), ranks)


def group_masks(teacher_ranks: torch.Tensor, student_ranks: torch.Tensor, cfg: WeightingConfig) -> dict:
    """Boolean masks [B] per group; the groups partition the batch."""
    noisy = teacher_ranks > cfg.noisy_rank
    teacher_right = teacher_ranks <= cfg.good_rank
    student_right = student_ranks.to(teacher_ranks.device) <= cfg.good_rank
    return {
        "noisy": noisy,
        "teacher_right_student_wrong": teacher_right & ~student_right,
        "both_right": teacher_right & student_right,
        "other": ~noisy & ~teacher_right,
    }


def sample_weights(teacher_ranks: torch.Tensor, student_ranks: torch.Tensor, cfg: WeightingConfig,
                   gallery_size: int | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """Weights [B] averaging 1 (zeros if all are 0) and counts per group, plus no_positive and all_zero."""
    masks = group_masks(teacher_ranks, student_ranks, cfg)
    group_weight = {"noisy": 0.0, "teacher_right_student_wrong": cfg.w_high, "both_right": cfg.w_low,
                    "other": cfg.w_mid}
    raw = torch.zeros(teacher_ranks.shape[0], dtype=torch.float32, device=teacher_ranks.device)
    for name, mask in masks.items():
        raw[mask] = group_weight[name]
    total = raw.sum()
    counts = {name: int(mask.sum()) for name, mask in masks.items()}
    counts["no_positive"] = int((teacher_ranks > gallery_size).sum()) if gallery_size is not None else 0
    counts["all_zero"] = int(bool(total == 0))
    weights = raw * (raw.numel() / total) if total > 0 else raw
    return weights, counts


def counts_per_condition(teacher_ranks: torch.Tensor, student_ranks: torch.Tensor, cfg: WeightingConfig,
                         conditions: list[str]) -> dict[str, int]:
    """Counts per group and condition of the samples, keyed "<group>.<condition>" (the diagnostics of METHOD.md)."""
    masks = group_masks(teacher_ranks, student_ranks, cfg)
    counts = {}
    for condition in sorted(set(conditions)):
        mine = torch.tensor([c == condition for c in conditions], device=teacher_ranks.device)
        counts.update({f"{name}.{condition}": int((mask & mine).sum()) for name, mask in masks.items()})
    return counts


def gallery_weights(teacher_desc: torch.Tensor, student_desc: torch.Tensor, labels: torch.Tensor,
                    teacher_gallery: torch.Tensor, student_gallery: torch.Tensor, gallery_labels: torch.Tensor,
                    cfg: WeightingConfig, exclude_self_ids: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[str, int]]:
    """Both models' ranks over their own gallery caches (same rows, same labels), then `sample_weights`."""
    if teacher_gallery.shape[0] != student_gallery.shape[0] or teacher_gallery.shape[0] != gallery_labels.shape[0]:
        raise ValueError("teacher gallery, student gallery and gallery labels must have the same rows")
    r_t = rank_of_true_positive(teacher_desc, labels, teacher_gallery, gallery_labels, exclude_self_ids)
    r_s = rank_of_true_positive(student_desc, labels, student_gallery, gallery_labels, exclude_self_ids)
    return sample_weights(r_t.to(labels.device), r_s.to(labels.device), cfg, gallery_size=gallery_labels.shape[0])
