"""Evaluating a branch on eval shards: encode database and queries, then FAISS recall@N overall and per condition."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from structvpr.platform.evaluation.encode import EncodedSplit, encode_split
from structvpr.platform.evaluation.recall import EvalReport, evaluate_descriptors


def evaluate_branch(model: nn.Module, shard_dir: str, split: str, device, n_values=(1, 5, 10, 20),
                    radius_m: float = 25.0, progress: bool = False) -> tuple[EvalReport, EncodedSplit, EncodedSplit]:
    db = encode_split(model, shard_dir, split, "database", device, progress=progress)
    queries = encode_split(model, shard_dir, split, "query", device, progress=progress)
    report = evaluate_descriptors(db.descriptors, queries.descriptors, db.utm, queries.utm,
                                  q_conditions=queries.conditions, n_values=tuple(n_values), radius_m=radius_m,
                                  progress=False)
    return report, db, queries


def write_eval_artifacts(out: Path, report: EvalReport, shards: str, split: str, num_queries: int) -> None:
    """metrics.json, the recall@N curve, and a grid of 8 queries with their top-5 marked right/wrong."""
    from structvpr.datasets.shards.reader import eval_samples
    from structvpr.platform.evaluation.plots import plot_recall_curve, plot_retrievals

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.to_metrics(), indent=1))
    plot_recall_curve(report, out / "recall_at_n.png")
    q_idx = np.linspace(0, num_queries - 1, num=min(8, num_queries)).astype(int).tolist()
    wanted_q, wanted_db = set(q_idx), set(report.topk[q_idx, :5].ravel().tolist())
    # Only the images the grid shows are decoded: a lazy pass over the shards, not the whole split in memory.
    q_images = {i: s["rgb"] for i, s in enumerate(eval_samples(shards, split, "queries")) if i in wanted_q}
    db_images = {i: s["rgb"] for i, s in enumerate(eval_samples(shards, split, "database")) if i in wanted_db}
    plot_retrievals(q_images, db_images, report.topk, report.positives_mask, out / "retrievals.png",
                    k=5, query_indices=q_idx, has_positive=report.has_positive)
