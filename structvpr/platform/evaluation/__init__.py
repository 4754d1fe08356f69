"""Evaluation: encoding eval shards, exact FAISS search, UTM positives, recall@N per condition, plots, `structvpr eval`."""

from .recall import EvalReport, evaluate_descriptors, recall_at_n

__all__ = ["EvalReport", "evaluate_descriptors", "recall_at_n"]
