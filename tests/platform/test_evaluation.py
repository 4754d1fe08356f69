"""Evaluation: recall@N equals the public VPR benchmarks' computation; known cases, conditions, metrics, errors, plots."""

import re

import faiss
import numpy as np
import pytest

from structvpr.platform.evaluation import EvalReport, evaluate_descriptors, recall_at_n
from structvpr.platform.evaluation.positives import positives_per_query
from structvpr.platform.evaluation.reference import public_benchmark_recalls
from structvpr.platform.evaluation.search import search_topk


def unit(x):
    """L2-normalised float32 copy: what the public benchmarks' models output and their recall code reads."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(seed, n_db=1500, n_q=240, dim=48, noise=1.4, dtype=np.float32):
    """Queries are noisy copies of database rows placed near them; some are moved away (no positive)."""
    rng = np.random.default_rng(seed)
    db = rng.standard_normal((n_db, dim)).astype(dtype)
    src = rng.integers(0, n_db, n_q)
    q = (db[src] + noise * rng.standard_normal((n_q, dim))).astype(dtype)
    db_utm = rng.uniform(0, 600, (n_db, 2)) + [450_000.0, 5_000_000.0]
    q_utm = db_utm[src] + rng.normal(0, 12, (n_q, 2))
    q_utm[: n_q // 10] += 10_000.0
    return db, q, db_utm, q_utm


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size, db_block_size", [(7, None), (50, 128), (1000, 300), (8192, None)])
def test_same_numbers_as_public_benchmarks(seed, chunk_size, db_block_size):
    db, q, db_utm, q_utm = synthetic(seed)
    over_all, over_with, without, _ = public_benchmark_recalls(unit(db), unit(q), db_utm, q_utm)
    report = evaluate_descriptors(db, q, db_utm, q_utm, chunk_size=chunk_size, db_block_size=db_block_size)
    assert report.recall == over_with
    assert report.recall_over_all_queries() == over_all
    assert report.num_without_positives == without >= len(q) // 10
    assert report.num_queries == len(q)
    assert 10 < report.recall[1] < report.recall[20] < 100  # the data is neither trivial nor hopeless


def test_float64_and_unnormalised_input_is_left_untouched():
    db, q, db_utm, q_utm = synthetic(3, dtype=np.float64)
    db *= 7.0
    before = db.copy()
    _, over_with, _, _ = public_benchmark_recalls(unit(db), unit(q), db_utm, q_utm)
    assert recall_at_n(db, q, db_utm, q_utm) == over_with
    np.testing.assert_array_equal(db, before)


def test_block_merge_equals_one_flat_index():
    db, q, _, _ = synthetic(4)
    _, ids = search_topk(db, q, 20, chunk_size=33, db_block_size=97)
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db / np.linalg.norm(db, axis=1, keepdims=True))
    _, ref = index.search(q / np.linalg.norm(q, axis=1, keepdims=True), 20)
    np.testing.assert_array_equal(ids, ref)


def test_positive_lists_match_sklearn_radius_neighbors():
    db, q, db_utm, q_utm = synthetic(5)
    *_, ref = public_benchmark_recalls(unit(db), unit(q), db_utm, q_utm)
    ours = positives_per_query(db_utm, q_utm, 25.0, chunk_size=17)
    assert [p.tolist() for p in ours] == [sorted(p.tolist()) for p in ref]


def hand_made():
    """Query 0: its only positive (db 2) ranks 3rd. Query 1: no database image within 25 m.

    Query 2 (night): found at rank 1. Descriptors are unit vectors at the given angles.
    """
    def at(deg):
        return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]

    db = np.array([at(10), at(20), at(30), at(40), at(50), at(90), at(100)], dtype=np.float32)
    db_utm = np.array([[0, 1000], [0, 2000], [0, 0], [0, 3000], [0, 4000], [500, 500], [0, 5000]], dtype=float)
    q = np.array([at(0), at(45), at(91)], dtype=np.float32)
    q_utm = np.array([[3, 4], [9000, 9000], [510, 500]], dtype=float)
    return db, q, db_utm, q_utm, ["day", "day", "night"]


def test_rank_three_counts_for_r5_not_r1():
    db, q, db_utm, q_utm, _ = hand_made()
    rec = recall_at_n(db[:5], q[:1], db_utm[:5], q_utm[:1], n_values=(1, 2, 3, 5))
    assert rec == {1: 0.0, 2: 0.0, 3: 100.0, 5: 100.0}


def test_queries_without_positives_counted_and_excluded():
    db, q, db_utm, q_utm, _ = hand_made()
    report = evaluate_descriptors(db, q[:2], db_utm, q_utm[:2], n_values=(1, 5))
    assert report.num_without_positives == 1
    assert report.recall == {1: 0.0, 5: 100.0}  # over the one query that has a positive
    assert report.recall_over_all_queries() == {1: 0.0, 5: 50.0}  # the benchmarks' denominator
    assert report.topk.shape == report.positives_mask.shape == (2, 5)
    assert report.topk[0, :3].tolist() == [0, 1, 2] and report.positives_mask[0, 2]


def test_per_condition_split_and_metric_names():
    db, q, db_utm, q_utm, conds = hand_made()
    report = evaluate_descriptors(db, q, db_utm, q_utm, q_conditions=conds, n_values=(1, 5))
    assert report.recall == {1: 50.0, 5: 100.0}
    assert report.recall_per_condition == {"day": {1: 0.0, 5: 100.0}, "night": {1: 100.0, 5: 100.0}}
    assert report.queries_per_condition == {"day": 2, "night": 1}
    assert report.without_positives_per_condition == {"day": 1, "night": 0}
    metrics = report.to_metrics()
    assert metrics["recall_at_1"] == 50.0 and metrics["recall_at_5_night"] == 100.0
    assert metrics["queries_without_positives"] == 1 and metrics["queries_without_positives_day"] == 1
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", name) for name in metrics)


def test_odd_condition_names_become_safe_and_empty_groups_drop_nan():
    db, q, db_utm, q_utm, _ = hand_made()
    report = evaluate_descriptors(db, q, db_utm, q_utm, q_conditions=["rain@dusk", "snow / fog", None])
    metrics = report.to_metrics()
    assert "recall_at_1_rain_dusk" in metrics
    assert "recall_at_1_snow_fog" not in metrics  # its only query has no positive: NaN left out
    assert metrics["queries_without_positives_snow_fog"] == 1
    assert all("@" not in name and re.fullmatch(r"[A-Za-z0-9_]+", name) for name in metrics)


def test_n_larger_than_database():
    db, q, db_utm, q_utm, _ = hand_made()
    assert recall_at_n(db[:3], q[:1], db_utm[:3], q_utm[:1]) == {1: 0.0, 5: 100.0, 10: 100.0, 20: 100.0}


def _base():
    rng = np.random.default_rng(0)
    return rng.standard_normal((10, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32), \
        rng.uniform(0, 50, (10, 2)), rng.uniform(0, 50, (3, 2))


def _nan_db(db, q, du, qu):
    db = db.copy()
    db[4, 1] = np.nan
    return db, q, du, qu


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda db, q, du, qu: (db, q, du[:9], qu), r"db_utm has 9 rows \(shape \(9, 2\)\).*10"),
        (lambda db, q, du, qu: (db, q, du, qu[:2]), r"query_utm has 2 rows .*query_descriptors has 3"),
        (lambda db, q, du, qu: (db, q, du[:, :1], qu), r"db_utm must have shape \(N, 2\).*\(10, 1\)"),
        (lambda db, q, du, qu: (db[0], q, du, qu), r"db_descriptors must be 2-D.*\(4,\)"),
        (lambda db, q, du, qu: (db, q[:, :3], du, qu), r"dims differ.*\(10, 4\).*\(3, 3\)"),
        (lambda db, q, du, qu: (db[:0], q, du[:0], qu), r"db_descriptors is empty.*\(0, 4\)"),
        (lambda db, q, du, qu: (db, q[:0], du, qu[:0]), r"query_descriptors is empty.*\(0, 4\)"),
        (_nan_db, r"db_descriptors \(shape \(10, 4\)\) has NaN.*row 4"),
    ],
)
def test_input_errors_name_argument_and_shape(change, pattern):
    with pytest.raises(ValueError, match=pattern):
        recall_at_n(*change(*_base()))


def test_condition_length_mismatch():
    with pytest.raises(ValueError, match=r"q_conditions has shape \(2,\).*3 rows"):
        evaluate_descriptors(*_base(), q_conditions=["day", "night"])


def test_use_gpu_true_without_gpu_is_an_error():
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="use_gpu=True"):
        evaluate_descriptors(*_base(), use_gpu=True)


def test_plots_write_pngs(tmp_path):
    from structvpr.platform.evaluation.plots import plot_recall_curve, plot_retrievals

    db, q, db_utm, q_utm = synthetic(6, n_db=300, n_q=40)
    conds = ["day", "night"] * 20
    report = evaluate_descriptors(db, q, db_utm, q_utm, q_conditions=conds)
    assert isinstance(report, EvalReport)
    rng = np.random.default_rng(0)
    q_imgs = rng.integers(0, 255, (len(q), 24, 32, 3), dtype=np.uint8)
    db_imgs = rng.integers(0, 255, (len(db), 24, 32, 3), dtype=np.uint8)
    paths = [
        plot_recall_curve(report, tmp_path / "curve.png"),
        plot_recall_curve({"a": report.recall, "b": {1: 10.0, 5: 20.0}}, tmp_path / "compare.png"),
        plot_retrievals(q_imgs, db_imgs, report.topk, report.positives_mask, tmp_path / "grid.png", n_queries=4,
                       has_positive=report.has_positive),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
