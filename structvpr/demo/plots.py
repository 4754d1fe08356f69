"""The report's figures: recall@1 per condition of every model, the weighted student's weighting groups per
condition, and queries that weighted KD gets right where the RGB-only student does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# pyplot comes from the evaluation figures' module, which selects the Agg backend before pyplot loads.
from structvpr.platform.evaluation.plots import QUERY, RIGHT, WRONG, _save, _tile, plt
from structvpr.platform.losses.weighting import GROUPS

# Red where KD listens least (noisy: weight 0), green where teacher and student agree, grey for the rest.
GROUP_COLOURS = {"noisy": WRONG, "teacher_right_student_wrong": QUERY, "both_right": RIGHT, "other": "#999999"}


def plot_recall_by_condition(evaluation: dict, labels: dict[str, str], path: Path) -> Path:
    """Grouped bars: R@1 overall and per condition, one bar per model."""
    conditions = sorted({c for result in evaluation.values() for c in result["per_condition"]})
    columns = ["overall", *conditions]
    width = 0.8 / max(len(evaluation), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(columns) + 2), 4.4), layout="constrained")
    for i, (name, result) in enumerate(evaluation.items()):
        values = [result["recall"]["1"]] + [result["per_condition"].get(c, {}).get("1", np.nan) for c in conditions]
        ax.bar(np.arange(len(columns)) + i * width - 0.4 + width / 2, values, width, label=labels.get(name, name))
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.set_ylabel("recall@1 (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="upper right")
    ax.set_title("test recall@1, overall and per query condition")
    return _save(fig, path)


def group_shares(epoch: dict) -> dict[str, dict[str, float]]:
    """condition -> group -> share of that condition's training views (one epoch's counts)."""
    conditions = sorted({k.split(".", 1)[1] for k in epoch if k.startswith("group_") and "." in k})
    shares = {}
    for condition in conditions:
        counts = {g: float(epoch.get(f"group_{g}.{condition}", 0)) for g in GROUPS}
        total = sum(counts.values())
        if total:
            shares[condition] = {g: c / total for g, c in counts.items()}
    return shares


def plot_group_shares_by_condition(shares: dict[str, dict[str, float]], epoch: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    conditions = list(shares)
    bottom = np.zeros(len(conditions))
    for group in GROUPS:
        values = np.array([shares[c][group] for c in conditions])
        ax.bar(conditions, values, bottom=bottom, label=group, color=GROUP_COLOURS[group])
        bottom += values
    ax.set_ylabel("share of training views")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax.set_title(f"weighted KD: weighting groups of the training views per condition (epoch {epoch})")
    return _save(fig, path)


def plot_wins(rows: list[int], shards: str, weighted: dict, rgb_only: dict, path: Path) -> Path:
    """One row per query: the query, the RGB-only student's top-1 (wrong), the weighted student's (right)."""
    from structvpr.datasets.shards.reader import eval_samples

    wanted_db = {int(m["topk"][q, 0]) for q in rows for m in (weighted, rgb_only)}
    queries = {i: s for i, s in enumerate(eval_samples(shards, "test", "queries")) if i in set(rows)}
    database = {i: s["rgb"] for i, s in enumerate(eval_samples(shards, "test", "database")) if i in wanted_db}
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.1 * len(rows) + 0.5), squeeze=False, layout="constrained")
    for ax_row, q in zip(axes, rows):
        _tile(ax_row[0], queries[q]["rgb"], QUERY, f"query {q} ({queries[q]['meta'].get('condition', '')})")
        _tile(ax_row[1], database[int(rgb_only["topk"][q, 0])], WRONG, "RGB only: top-1 wrong")
        _tile(ax_row[2], database[int(weighted["topk"][q, 0])], RIGHT, "weighted KD: top-1 right")
    fig.suptitle("queries the weighted-KD student gets right and the RGB-only student does not")
    return _save(fig, path)
