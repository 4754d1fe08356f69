"""Losses: the metric loss on place batches, per-sample distillation, StructVPR weighting, the student's objective."""

from structvpr.platform.losses.kd import KD_FUNCTIONS, kd_mse, kd_per_sample, kd_similarity_kl
from structvpr.platform.losses.metric import MetricLoss

__all__ = ["KD_FUNCTIONS", "MetricLoss", "kd_mse", "kd_per_sample", "kd_similarity_kl"]
