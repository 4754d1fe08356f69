"""Recall@N computed the way the public VPR benchmarks' code computes it (sklearn radius neighbours + a full sort): the yardstick our FAISS path is checked against.

deep-visual-geo-localization-benchmark's test.py and datasets_ws.py, minus the model: faiss IndexFlatL2
over the database, sklearn NearestNeighbors.radius_neighbors for the positives, and their recall loop.
Used by tests/platform/test_evaluation.py and bench/bench_eval.py; training and `structvpr eval` never
call it. sklearn is imported here only, when the function runs.
"""

from __future__ import annotations

import numpy as np


def public_benchmark_recalls(db, q, db_utm, q_utm, n_values=(1, 5, 10, 20), radius=25.0, n_jobs=1):
    """(recall over all queries, recall over queries with a positive, queries without one, positives per query).

    Recalls are {N: percent}. Descriptors are taken as given (float32, L2-normalised like the public
    models' output); n_jobs goes to NearestNeighbors and changes only the speed.
    """
    import faiss
    from sklearn.neighbors import NearestNeighbors

    index = faiss.IndexFlatL2(db.shape[1])
    index.add(db)
    _, predictions = index.search(q, max(n_values))
    knn = NearestNeighbors(n_jobs=n_jobs)
    knn.fit(db_utm)
    positives_per_q = knn.radius_neighbors(q_utm, radius=radius, return_distance=False)
    recalls = np.zeros(len(n_values))
    for query_index, pred in enumerate(predictions):
        for i, n in enumerate(n_values):
            if np.any(np.isin(pred[:n], positives_per_q[query_index])):
                recalls[i:] += 1
                break
    with_pos = sum(len(p) > 0 for p in positives_per_q)
    over_all = {n: r / len(q) * 100 for n, r in zip(n_values, recalls)}
    over_with = {n: r / with_pos * 100 for n, r in zip(n_values, recalls)}
    return over_all, over_with, len(q) - with_pos, positives_per_q
