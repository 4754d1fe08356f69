"""Ground truth from UTM: which database images lie within the radius (metres, inclusive) of each query.

Recall only needs two things per query: whether any positive exists and which
of its top-k retrievals are positives. Both come without building the list
of every positive (which grows with place density), so evaluation memory does
not depend on it; `positives_per_query` gives the full lists when wanted.
All three use the same test, squared planar distance <= radius**2, so they
agree with each other at the boundary.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_CHUNK_SIZE = 8192


def check_utms(db_utm, q_utm, n_db: int, n_q: int) -> tuple[np.ndarray, np.ndarray]:
    """Return both UTM arrays as float64 (N, 2), raising ValueError naming the argument and shape."""
    out = []
    for name, utm, n, of in (("db_utm", db_utm, n_db, "db_descriptors"), ("query_utm", q_utm, n_q, "query_descriptors")):
        arr = np.asarray(utm, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"{name} must have shape (N, 2) (east, north), got {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} rows (shape {arr.shape}) but {of} has {n}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} (shape {arr.shape}) has NaN or infinite values")
        out.append(arr)
    return out[0], out[1]


def has_positive(
    db_utm: np.ndarray, q_utm: np.ndarray, radius_m: float, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Boolean (nq,): True where at least one database image is within `radius_m` of the query."""
    tree = cKDTree(db_utm)
    found = np.empty(len(q_utm), dtype=bool)
    # The bound only prunes the tree walk; the decision is the shared test below.
    bound = radius_m * (1 + 1e-6) + 1e-6
    for start in range(0, len(q_utm), chunk_size):
        q = q_utm[start : start + chunk_size]
        _, nearest = tree.query(q, k=1, distance_upper_bound=bound, workers=-1)
        hit = nearest < len(db_utm)  # cKDTree marks "none within bound" with n
        found[start : start + len(q)] = hit
        found[start : start + len(q)][hit] = _within(db_utm[nearest[hit]], q[hit], radius_m)
    return found


def topk_positive_mask(
    topk: np.ndarray, db_utm: np.ndarray, q_utm: np.ndarray, radius_m: float, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Boolean (nq, k): True where retrieval j of query i is within `radius_m` of it."""
    mask = np.empty(topk.shape, dtype=bool)
    for start in range(0, len(topk), chunk_size):
        stop = start + chunk_size
        mask[start:stop] = _within(db_utm[topk[start:stop]], q_utm[start:stop, None, :], radius_m)
    return mask


def positives_per_query(
    db_utm: np.ndarray, q_utm: np.ndarray, radius_m: float, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[np.ndarray]:
    """Sorted database indices within `radius_m` of each query (the public benchmarks' `get_positives()`)."""
    tree = cKDTree(db_utm)
    bound = radius_m * (1 + 1e-6) + 1e-6
    out: list[np.ndarray] = []
    for start in range(0, len(q_utm), chunk_size):
        q = q_utm[start : start + chunk_size]
        for qi, cand in zip(q, tree.query_ball_point(q, bound, workers=-1)):
            cand = np.sort(np.asarray(cand, dtype=np.int64))
            out.append(cand[_within(db_utm[cand], qi, radius_m)])
    return out


def _within(a: np.ndarray, b: np.ndarray, radius_m: float) -> np.ndarray:
    d = a - b
    return d[..., 0] ** 2 + d[..., 1] ** 2 <= radius_m**2
