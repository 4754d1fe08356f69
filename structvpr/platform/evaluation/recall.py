"""Recall@N of descriptors against UTM ground truth, overall and per condition, as a report and MLflow metrics.

Convention: a query counts at N when any of its top N retrievals is a
positive (database image within `radius_m`, inclusive), as in the public VPR
benchmarks (deep-visual-geo-localization-benchmark `test.py`,
VPR-methods-evaluation `main.py`, gsv-cities `get_validation_recalls`).
One difference, on purpose: those divide by *all* queries, so a query with no
positive counts as a miss; here recall is a percentage of the queries that
have at least one positive, and the others are counted in
`num_without_positives`. `EvalReport.recall_over_all_queries()` gives the
benchmarks' number; the two agree when every query has a positive.
Ranking is by cosine: the same as their IndexFlatL2 for L2-normalised
descriptors (what VPR models output); for raw ones it differs on purpose.
Exact score ties (duplicate database descriptors) may be ordered differently.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .positives import check_utms, has_positive, topk_positive_mask
from .search import DEFAULT_CHUNK_SIZE, check_descriptors, search_topk

logger = logging.getLogger(__name__)

DEFAULT_N_VALUES = (1, 5, 10, 20)


@dataclass
class EvalReport:
    """Result of `evaluate_descriptors`; recalls are percentages over queries with a positive (NaN if none)."""

    n_values: tuple[int, ...]
    radius_m: float
    recall: dict[int, float]
    num_queries: int
    num_without_positives: int
    # condition -> {n: percent}; conditions as given, counts per condition beside them.
    recall_per_condition: dict[str, dict[int, float]] = field(default_factory=dict)
    queries_per_condition: dict[str, int] = field(default_factory=dict)
    without_positives_per_condition: dict[str, int] = field(default_factory=dict)
    # (nq, k) database indices best first, k = min(max n, database size), for plots.
    topk: np.ndarray | None = field(default=None, repr=False)
    # (nq, k) True where topk[i, j] is a positive of query i.
    positives_mask: np.ndarray | None = field(default=None, repr=False)
    # (nq,) True where query i has at least one positive.
    has_positive: np.ndarray | None = field(default=None, repr=False)

    def recall_over_all_queries(self) -> dict[int, float]:
        """Recall with queries without positives counted as misses: the public benchmarks' denominator."""
        return recall_from_mask(self.positives_mask, np.ones(self.num_queries, dtype=bool), self.n_values)

    def to_metrics(self) -> dict[str, float]:
        """Flat MLflow-safe metrics: recall_at_1, recall_at_5_night, queries_without_positives, ...

        NaN recalls (no query with a positive in that group) are left out; the
        counts beside them say why.
        """
        metrics: dict[str, float] = {f"recall_at_{n}": v for n, v in self.recall.items()}
        metrics["num_queries"] = float(self.num_queries)
        metrics["queries_without_positives"] = float(self.num_without_positives)
        for cond, rec in self.recall_per_condition.items():
            tag = metric_tag(cond)
            metrics.update({f"recall_at_{n}_{tag}": v for n, v in rec.items()})
            metrics[f"num_queries_{tag}"] = float(self.queries_per_condition[cond])
            metrics[f"queries_without_positives_{tag}"] = float(self.without_positives_per_condition[cond])
        return {k: v for k, v in metrics.items() if not math.isnan(v)}


def metric_tag(condition: str) -> str:
    """A condition name reduced to letters, digits and underscores (MLflow forbids '@' and more)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", str(condition)).strip("_") or "unnamed"


def recall_from_mask(positives_mask: np.ndarray, has_pos: np.ndarray, n_values: Sequence[int]) -> dict[int, float]:
    """{n: percent of queries in `has_pos` whose first positive retrieval ranks below n}."""
    found = positives_mask.any(axis=1)
    first_hit = np.where(found, positives_mask.argmax(axis=1), np.iinfo(np.int64).max)[has_pos]
    n_with = int(np.count_nonzero(has_pos))
    if n_with == 0:
        return {n: math.nan for n in n_values}
    # Same operation order as the benchmarks (count / queries * 100) so numbers match bit for bit.
    return {n: float(np.count_nonzero(first_hit < n)) / n_with * 100 for n in n_values}


def evaluate_descriptors(
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    db_utm: np.ndarray,
    q_utm: np.ndarray,
    q_conditions: Sequence[str | None] | None = None,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    radius_m: float = 25.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    use_gpu: bool | None = None,
    progress: bool | None = None,
    db_block_size: int | None = None,
) -> EvalReport:
    """Exact search (cosine on L2-normalised descriptors) and recall@N, overall and per condition.

    `q_conditions`: one string per query (e.g. "night", "winter"); None entries
    take part only in the overall recall. `chunk_size` queries and
    `db_block_size` database rows are handled at a time (see `search.search_topk`).
    """
    n_values = _check_n_values(n_values)
    # asarray: no copy for numpy arrays and memmaps; lists and CPU tensors work too.
    db_desc, q_desc = np.asarray(db_desc), np.asarray(q_desc)
    check_descriptors(db_desc, q_desc)
    db_utm, q_utm = check_utms(db_utm, q_utm, db_desc.shape[0], q_desc.shape[0])
    conditions = _check_conditions(q_conditions, q_desc.shape[0])
    if radius_m <= 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")

    k = min(max(n_values), db_desc.shape[0])
    _, topk = search_topk(db_desc, q_desc, k, chunk_size, db_block_size, use_gpu, progress)
    mask = topk_positive_mask(topk, db_utm, q_utm, radius_m, chunk_size)
    # A positive among the top k proves one exists, whatever rounding says.
    has_pos = has_positive(db_utm, q_utm, radius_m, chunk_size) | mask.any(axis=1)
    report = EvalReport(
        n_values=n_values,
        radius_m=float(radius_m),
        recall=recall_from_mask(mask, has_pos, n_values),
        num_queries=int(q_desc.shape[0]),
        num_without_positives=int(np.count_nonzero(~has_pos)),
        topk=topk,
        positives_mask=mask,
        has_positive=has_pos,
    )
    if conditions is not None:
        _add_conditions(report, conditions)
    if report.num_without_positives:
        logger.info("%d of %d queries have no database image within %.1f m; recall excludes them",
                    report.num_without_positives, report.num_queries, radius_m)
    return report


def recall_at_n(
    db_descriptors: np.ndarray,
    query_descriptors: np.ndarray,
    db_utm: np.ndarray,
    query_utm: np.ndarray,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    radius_m: float = 25.0,
) -> dict[int, float]:
    """Recall@N in percent, {n: percent}, by exact search on your own descriptors.

    Descriptors: (N, D) float32 or float64, L2-normalised here if they are not
    (the caller's arrays are left untouched); UTM: (N, 2) east/north in metres.
    A positive is a database image within `radius_m` (inclusive) of the query;
    a query counts at N when any of its top N is a positive. The percentage is
    over the queries that have at least one positive; the public benchmarks
    divide by all queries instead (use `evaluate_descriptors(...)
    .recall_over_all_queries()` for their number, and `.num_without_positives`
    for the count). NaN if no query has a positive.
    """
    return evaluate_descriptors(
        db_descriptors, query_descriptors, db_utm, query_utm, n_values=n_values, radius_m=radius_m, progress=False
    ).recall


def _check_n_values(n_values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(n) for n in n_values)
    if not values or any(n < 1 for n in values):
        raise ValueError(f"n_values must be positive integers, got {tuple(n_values)}")
    return tuple(sorted(set(values)))


def _check_conditions(q_conditions, n_q: int) -> np.ndarray | None:
    if q_conditions is None:
        return None
    conds = np.asarray(list(q_conditions), dtype=object)
    if conds.ndim != 1 or len(conds) != n_q:
        raise ValueError(f"q_conditions has shape {conds.shape} but query_descriptors has {n_q} rows")
    return conds


def _add_conditions(report: EvalReport, conditions: np.ndarray) -> None:
    names = sorted({str(c) for c in conditions if c is not None and c != ""})
    for name in names:
        sub = np.array([c is not None and str(c) == name for c in conditions])
        report.recall_per_condition[name] = recall_from_mask(
            report.positives_mask[sub], report.has_positive[sub], report.n_values
        )
        report.queries_per_condition[name] = int(np.count_nonzero(sub))
        report.without_positives_per_condition[name] = int(np.count_nonzero(~report.has_positive[sub]))
