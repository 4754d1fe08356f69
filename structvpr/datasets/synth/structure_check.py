"""Structure check: a trivial descriptor of the label maps should find places across conditions better than RGB.

Descriptor: downsample to a small grid (RGB: 3 channels; labels: one-hot categories, area-averaged),
flatten, L2-normalise; retrieval by inner product; positives are database images within `radius` metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from structvpr.datasets.synth.camera import ROLE_DIRS
from structvpr.datasets.vg_names import parse_vg_name

GRID = (16, 12)  # width, height of the descriptor grid
NUM_LABELS = 8


@dataclass
class Side:
    """Database or queries of one split: descriptors of both kinds, positions and conditions."""

    rgb: np.ndarray
    label: np.ndarray
    xy: np.ndarray
    condition: list[str]


def load_side(root: Path, split: str, role: str, grid: tuple[int, int] = GRID) -> Side:
    paths = sorted((root / "images" / split / ROLE_DIRS[role]).glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no images under {root}/images/{split}/{ROLE_DIRS[role]}")
    names = [parse_vg_name(p.name) for p in paths]
    label_dir = root / "labels" / split / ROLE_DIRS[role]
    return Side(
        rgb=np.stack([rgb_descriptor(np.asarray(Image.open(p).convert("RGB")), grid) for p in paths]),
        label=np.stack([label_descriptor(np.asarray(Image.open(label_dir / (p.stem + ".png"))), grid)
                        for p in paths]),
        xy=np.array([[n.utm_east, n.utm_north] for n in names]),
        condition=[n.note for n in names],
    )


def rgb_descriptor(rgb: np.ndarray, grid: tuple[int, int] = GRID) -> np.ndarray:
    return _normalise(_block_mean(rgb.astype(np.float32) / 255.0, grid))


def label_descriptor(label: np.ndarray, grid: tuple[int, int] = GRID) -> np.ndarray:
    one_hot = np.eye(NUM_LABELS, dtype=np.float32)[np.clip(label, 0, NUM_LABELS - 1)]
    return _normalise(_block_mean(one_hot, grid))


def _block_mean(img: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Area average of an (H, W, C) array over a grid of (width, height) cells; sizes need not divide."""
    h, w = img.shape[:2]
    rows = np.linspace(0, h, grid[1] + 1).astype(int)[:-1]
    cols = np.linspace(0, w, grid[0] + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(img, rows, axis=0), cols, axis=1)
    counts = np.diff(np.append(rows, h))[:, None, None] * np.diff(np.append(cols, w))[None, :, None]
    return sums / counts


def _normalise(x: np.ndarray) -> np.ndarray:
    v = x.reshape(-1).astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def found_at(db_desc, db_xy, q_desc, q_xy, ks=(1, 5), radius: float = 25.0) -> tuple[dict, np.ndarray]:
    """Per query and k, whether a positive is among the top k; and which queries have any positive."""
    order = np.argsort(-(q_desc @ db_desc.T), axis=1, kind="stable")
    dist = np.linalg.norm(q_xy[:, None, :] - db_xy[None, :, :], axis=2)
    positive = dist <= radius
    ranked = np.take_along_axis(positive, order, axis=1)
    return {k: ranked[:, :k].any(axis=1) for k in ks}, positive.any(axis=1)


def structure_recall(root: str | Path, splits: str | tuple[str, ...] = "test", radius: float = 25.0,
                     ks=(1, 5)) -> dict:
    """Recall@k per query condition and overall, for RGB and for label descriptors.

    Each split's queries search that split's database; with several splits the queries are pooled.
    """
    root = Path(root)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    hits = {"rgb": {k: [] for k in ks}, "label": {k: [] for k in ks}}
    has_pos, conditions, n_db = [], [], 0
    for split in splits:
        db, q = load_side(root, split, "database"), load_side(root, split, "query")
        for kind in hits:
            found, pos = found_at(getattr(db, kind), db.xy, getattr(q, kind), q.xy, ks, radius)
            for k in ks:
                hits[kind][k].append(found[k])
        has_pos.append(pos)
        conditions += q.condition
        n_db += len(db.condition)
    has_pos = np.concatenate(has_pos)
    out = {"splits": list(splits), "queries": len(conditions), "database": n_db,
           "no_positive": int((~has_pos).sum())}
    for kind, per_k in hits.items():
        out[kind] = _by_condition({k: np.concatenate(v) for k, v in per_k.items()}, has_pos, conditions)
    return out


def _by_condition(hits: dict, has_pos: np.ndarray, conditions: list[str]) -> dict:
    """Recall over the queries that have a positive, per condition and overall (in percent)."""
    conditions = np.array(conditions)
    table = {}
    for name in [*sorted(set(conditions)), "overall"]:
        sel = has_pos & ((conditions == name) if name != "overall" else True)
        table[name] = {f"R@{k}": round(100.0 * float(v[sel].mean()), 1) if sel.any() else float("nan")
                       for k, v in hits.items()}
        table[name]["n"] = int(np.sum(sel))
    return table
