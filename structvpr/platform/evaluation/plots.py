"""Evaluation figures as PNG files: recall@N curves and grids of queries with their top retrievals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .recall import EvalReport  # noqa: E402

RIGHT, WRONG, QUERY = "#1a9850", "#d73027", "#4575b4"


def plot_recall_curve(report_or_dict, path, title: str | None = None) -> Path:
    """Recall@N against N; one line overall plus one per condition.

    Accepts an EvalReport, a {n: percent} dict, or {label: {n: percent}} to compare runs.
    """
    curves = _curves(report_or_dict)
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    for i, (label, rec) in enumerate(curves.items()):
        ns = sorted(rec)
        # The overall line is drawn heavier so per-condition lines read as its breakdown.
        ax.plot(ns, [rec[n] for n in ns], marker="o", lw=2.5 if i == 0 else 1.5, label=label)
    all_ns = sorted({n for rec in curves.values() for n in rec})
    ax.set_xscale("log")
    ax.set_xticks(all_ns, [str(n) for n in all_ns])
    ax.minorticks_off()
    ax.set_ylim(0, 100)
    ax.set_xlabel("N (top retrievals)")
    ax.set_ylabel("recall@N (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or _curve_title(report_or_dict))
    return _save(fig, path)


def _curves(report_or_dict) -> dict[str, dict[int, float]]:
    if isinstance(report_or_dict, EvalReport):
        curves = {"all": report_or_dict.recall}
        for cond, rec in report_or_dict.recall_per_condition.items():
            curves[f"{cond} ({report_or_dict.queries_per_condition[cond]} q)"] = rec
        return curves
    if not isinstance(report_or_dict, Mapping) or not report_or_dict:
        raise TypeError("plot_recall_curve needs an EvalReport, {n: percent} or {label: {n: percent}}")
    if all(isinstance(v, Mapping) for v in report_or_dict.values()):
        return {str(k): dict(v) for k, v in report_or_dict.items()}
    return {"recall": dict(report_or_dict)}


def _curve_title(report_or_dict) -> str:
    if isinstance(report_or_dict, EvalReport):
        r = report_or_dict
        return f"recall@N, {r.radius_m:g} m, {r.num_queries} queries ({r.num_without_positives} without positives)"
    return "recall@N"


def plot_retrievals(
    query_images: Sequence[np.ndarray],
    db_images: Sequence[np.ndarray],
    topk: np.ndarray,
    positives_mask: np.ndarray,
    path,
    n_queries: int = 8,
    k: int = 5,
    query_indices: Sequence[int] | None = None,
    has_positive: np.ndarray | None = None,
) -> Path:
    """Grid: one row per query, the query then its top-k retrievals framed green (right) or red (wrong).

    Images are uint8 HxWx3 arrays; `db_images` only needs indexing by database
    index (a lazy loader works). `query_indices` picks the rows (default: the
    first `n_queries`); with `has_positive` (EvalReport.has_positive) queries
    that no retrieval could get right say so.
    """
    rows = list(query_indices) if query_indices is not None else list(range(min(n_queries, len(topk))))
    k = min(k, topk.shape[1])
    if not rows:
        raise ValueError("plot_retrievals: no queries to draw")
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(2.2 * (k + 1), 2.0 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    for r, qi in enumerate(rows):
        no_pos = has_positive is not None and not has_positive[qi]
        _tile(axes[r, 0], query_images[qi], QUERY, f"query {qi}" + (" (no positive)" if no_pos else ""))
        for j in range(k):
            db_i = int(topk[qi, j])
            ok = bool(positives_mask[qi, j])
            _tile(axes[r, j + 1], db_images[db_i], RIGHT if ok else WRONG, f"#{j + 1} db {db_i}")
    fig.suptitle(f"top-{k} retrievals: green = within radius, red = wrong")
    return _save(fig, path)


def _tile(ax, image: np.ndarray, colour: str, label: str) -> None:
    ax.imshow(np.asarray(image))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(5)
    ax.set_title(label, fontsize=8, color=colour)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
