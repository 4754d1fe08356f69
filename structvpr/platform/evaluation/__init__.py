"""Evaluation: exact FAISS search, UTM positives, recall@N per condition, MLflow metrics and plots."""

from .recall import EvalReport, evaluate_descriptors, recall_at_n

__all__ = ["EvalReport", "evaluate_descriptors", "recall_at_n"]
