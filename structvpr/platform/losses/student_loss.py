"""The student's objective: metric loss plus lambda times the (optionally sample-weighted) distillation term."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KDMode:
    """One value of `kd.mode`: whether the student runs a teacher, and whether its KD terms are weighted."""

    name: str
    uses_teacher: bool
    weighted: bool
    description: str


# The one list of KD modes: the recipe, the job and the loss all read it.
KD_MODES = {mode.name: mode for mode in (
    KDMode("none", uses_teacher=False, weighted=False, description="RGB only: metric loss alone"),
    KDMode("plain", uses_teacher=True, weighted=False, description="metric + lambda * mean_i KD_i"),
    KDMode("weighted", uses_teacher=True, weighted=True, description="metric + lambda * sum_i w_i KD_i / B (StructVPR)"),
)}


def kd_mode(name: str) -> KDMode:
    if name not in KD_MODES:
        raise ValueError(f"kd.mode must be one of {', '.join(KD_MODES)}, got {name!r}")
    return KD_MODES[name]


def student_loss(metric_loss_value: torch.Tensor, kd_per_sample: torch.Tensor | None, weights: torch.Tensor | None,
                 lam: float, mode: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its detached components (metric, kd_mean, kd_term).

    none: metric only (the RGB-only baseline); plain: metric + lam * mean_i KD_i;
    weighted: metric + lam * sum_i w_i KD_i / B with weights that average 1 (see
    weighting.py), so plain and weighted share one lambda scale.
    """
    spec = kd_mode(mode)
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    components = {"metric": metric_loss_value.detach()}
    if not spec.uses_teacher:
        if kd_per_sample is not None:
            components["kd_mean"] = kd_per_sample.detach().mean()  # still worth logging when a teacher is at hand
        return metric_loss_value, components
    if kd_per_sample is None or kd_per_sample.dim() != 1:
        raise ValueError(f"kd mode {mode!r} needs per-sample KD values [B]")
    if not spec.weighted:
        kd_term = lam * kd_per_sample.mean()
    else:
        if weights is None or weights.shape != kd_per_sample.shape:
            raise ValueError(f"weighted KD needs weights of shape {tuple(kd_per_sample.shape)}, "
                             f"got {None if weights is None else tuple(weights.shape)}")
        kd_term = lam * (weights.detach() * kd_per_sample).sum() / kd_per_sample.shape[0]
    components.update(kd_mean=kd_per_sample.detach().mean(), kd_term=kd_term.detach())
    return metric_loss_value + kd_term, components
