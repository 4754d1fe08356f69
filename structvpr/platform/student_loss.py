"""The student's objective: metric loss plus lambda times the (optionally sample-weighted) distillation term."""

from __future__ import annotations

import torch

KD_MODES = ("none", "plain", "weighted")


def student_loss(metric_loss_value: torch.Tensor, kd_per_sample: torch.Tensor | None, weights: torch.Tensor | None,
                 lam: float, mode: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its detached components (metric, kd_mean, kd_term).

    none: metric only (the RGB-only baseline); plain: metric + lam * mean_i KD_i;
    weighted: metric + lam * sum_i w_i KD_i / B with weights that average 1 (see
    weighting.py), so plain and weighted share one lambda scale.
    """
    if mode not in KD_MODES:
        raise ValueError(f"kd mode must be one of {KD_MODES}, got {mode!r}")
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    components = {"metric": metric_loss_value.detach()}
    if mode == "none":
        if kd_per_sample is not None:
            components["kd_mean"] = kd_per_sample.detach().mean()  # still worth logging when a teacher is at hand
        return metric_loss_value, components
    if kd_per_sample is None or kd_per_sample.dim() != 1:
        raise ValueError(f"kd mode {mode!r} needs per-sample KD values [B]")
    if mode == "plain":
        kd_term = lam * kd_per_sample.mean()
    else:
        if weights is None or weights.shape != kd_per_sample.shape:
            raise ValueError(f"weighted KD needs weights of shape {tuple(kd_per_sample.shape)}, "
                             f"got {None if weights is None else tuple(weights.shape)}")
        kd_term = lam * (weights.detach() * kd_per_sample).sum() / kd_per_sample.shape[0]
    components.update(kd_mean=kd_per_sample.detach().mean(), kd_term=kd_term.detach())
    return metric_loss_value + kd_term, components
