"""Exact top-k search by inner product on L2-normalised descriptors, in blocks so memory stays near the descriptors' size.

Descriptors are always L2-normalised here (a zero vector stays zero), so the
inner product is the cosine similarity and the ranking equals that of L2
distance on normalised descriptors, the public benchmarks' IndexFlatL2.
The caller's arrays are never modified or copied whole: the database is
normalised one block at a time into a reused float32 buffer (a quarter of the
database by default) and searched with `faiss.knn`, which reads numpy memory
in place; an IndexFlatIP would hold a second full copy of the database.
Per-block results are merged with `faiss.ResultHeap`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # before the import: it logs every CPU feature it probes
import faiss  # noqa: E402
import numpy as np
from tqdm.auto import tqdm

DEFAULT_CHUNK_SIZE = 8192
# Below this many query x database pairs a progress bar is noise.
_PROGRESS_MIN_PAIRS = 500_000_000
# The database buffer is a quarter of the database, but never so small that
# faiss calls get too short to run at BLAS speed.
_MIN_BLOCK_ROWS = 16384
_CHECK_ROWS = 65536


def check_descriptors(db_desc: np.ndarray, q_desc: np.ndarray) -> None:
    """Raise ValueError naming the argument and its shape when descriptors are unusable."""
    for name, arr in (("db_descriptors", db_desc), ("query_descriptors", q_desc)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (num_images, dim), got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name} is empty: shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{name} must hold floats (float32 or float64), got {arr.dtype} with shape {arr.shape}")
    if db_desc.shape[1] != q_desc.shape[1]:
        raise ValueError(
            f"descriptor dims differ: db_descriptors shape {db_desc.shape}, query_descriptors shape {q_desc.shape}"
        )
    _check_finite(db_desc, "db_descriptors")
    _check_finite(q_desc, "query_descriptors")


def _check_finite(arr: np.ndarray, name: str) -> None:
    # Row blocks keep the boolean temporary small next to a large database.
    for start in range(0, arr.shape[0], _CHECK_ROWS):
        ok = np.isfinite(arr[start : start + _CHECK_ROWS]).all(axis=1)
        if not ok.all():
            row = start + int(np.argmin(ok))
            raise ValueError(f"{name} (shape {arr.shape}) has NaN or infinite values, first at row {row}")


def search_topk(
    db_desc: np.ndarray,
    q_desc: np.ndarray,
    k: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    db_block_size: int | None = None,
    use_gpu: bool | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database rows by cosine similarity for each query: (scores float32, indices int64), both (nq, k).

    Queries are searched `chunk_size` at a time; the database `db_block_size`
    rows at a time (default: a quarter of it, at least 16384 rows). `use_gpu`
    None means the GPU when faiss sees one. `progress` None shows a bar only
    for large searches; False never.
    """
    n_db = db_desc.shape[0]
    if not 1 <= k <= n_db:
        raise ValueError(f"k must be in [1, {n_db}] for db_descriptors of shape {db_desc.shape}, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    block_rows = db_block_size or max(_MIN_BLOCK_ROWS, math.ceil(n_db / 4))
    if _want_gpu(use_gpu):
        return _gpu_search(db_desc, q_desc, k, chunk_size, block_rows)
    return _cpu_search(db_desc, q_desc, k, chunk_size, block_rows, progress)


def _want_gpu(use_gpu: bool | None) -> bool:
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu and num_gpus == 0:
        raise RuntimeError("use_gpu=True but faiss sees no GPU (faiss-cpu installed, or no CUDA device)")
    return num_gpus > 0 and use_gpu is not False


def normalised_blocks(arr: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, block) with each block L2-normalised float32 in one reused buffer.

    A block is only valid until the next one is produced.
    """
    buf = np.empty((min(rows, arr.shape[0]), arr.shape[1]), dtype=np.float32)
    for start in range(0, arr.shape[0], rows):
        src = arr[start : start + rows]
        out = buf[: src.shape[0]]
        # einsum sums squares without a block-sized temporary; norms in the source precision.
        norms = np.sqrt(np.einsum("ij,ij->i", src, src))
        norms[norms == 0] = 1.0
        np.divide(src, norms[:, None], out=out, casting="same_kind")
        yield start, out


def _cpu_search(db_desc, q_desc, k, chunk_size, block_rows, progress):
    n_db, n_q = db_desc.shape[0], q_desc.shape[0]
    n_steps = math.ceil(n_db / block_rows) * math.ceil(n_q / chunk_size)
    show = progress if progress is not None else n_db * n_q >= _PROGRESS_MIN_PAIRS
    heap = faiss.ResultHeap(n_q, k, keep_max=True)
    with tqdm(total=n_steps, disable=not show, desc="faiss search", unit="block") as bar:
        # Database blocks outside so each is normalised once; queries are small.
        for db_start, block in normalised_blocks(db_desc, block_rows):
            kb = min(k, block.shape[0])
            for q_start, chunk in normalised_blocks(q_desc, chunk_size):
                scores, ids = faiss.knn(chunk, block, kb, metric=faiss.METRIC_INNER_PRODUCT)
                subset = np.arange(q_start, q_start + chunk.shape[0], dtype=np.int64)
                heap.add_result_subset(subset, scores, ids + db_start)
                bar.update(1)
    heap.finalize()
    return heap.D, heap.I


def _gpu_search(db_desc, q_desc, k, chunk_size, block_rows):
    # --- GPU branch: needs faiss-gpu and a CUDA device; not run by the CPU tests. ---
    # The index holds the normalised database on the GPU; the host only ever
    # holds one block. GPU flat search supports k <= 2048.
    res = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(res, 0, faiss.IndexFlatIP(db_desc.shape[1]))
    for _, block in normalised_blocks(db_desc, block_rows):
        index.add(block)
    scores = np.empty((q_desc.shape[0], k), dtype=np.float32)
    ids = np.empty((q_desc.shape[0], k), dtype=np.int64)
    for start, chunk in normalised_blocks(q_desc, chunk_size):
        scores[start : start + len(chunk)], ids[start : start + len(chunk)] = index.search(chunk, k)
    return scores, ids
