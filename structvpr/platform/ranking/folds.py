"""Spatial folds of the training places, for out-of-fold teacher ranks: no fold teacher saw the street it ranks.

Places are grouped into square blocks of `block_m` metres (by the mean UTM of their views); blocks,
not places, are dealt to K folds in a seeded order, so neighbouring places fall in one fold. A fold
teacher trains on the places of the other folds less a buffer: any place within `radius_m` of a
held-out place is left out of its training too, so it never trained on the street it ranks.
Deterministic from the manifest's training views and the seed.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from structvpr.config import ConfigError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.datasets.shards.reader import place_label
from structvpr.datasets.shards.tar_reader import read_tar_samples


@dataclass(frozen=True)
class TrainingView:
    """One stored view of a training place: what the ranks table has a row for."""

    key: str  # the place sample's key
    place: int
    view: int
    east: float
    north: float
    condition: str


def training_views(manifest: Manifest) -> list[TrainingView]:
    """Every stored training view, in shard order, from the samples' metadata."""
    rows = []
    for sample in read_tar_samples(manifest.shard_paths("train", "places")):
        meta = json.loads(sample["json"])
        for view, v in enumerate(meta["views"]):
            rows.append(TrainingView(sample["__key__"], place_label(sample["__key__"]), view,
                                     float(v["utm_east"]), float(v["utm_north"]), v.get("condition") or ""))
    return rows


@dataclass(frozen=True)
class FoldPlan:
    """Which fold holds out each training place, and which places each fold teacher must not train on."""

    fold_of: dict[int, int]  # place -> fold
    excluded: tuple[frozenset[int], ...]  # per fold: its places plus their neighbours within the radius
    num_blocks: int

    @property
    def folds(self) -> int:
        return len(self.excluded)

    def held_out(self, fold: int) -> list[int]:
        return sorted(p for p, f in self.fold_of.items() if f == fold)


def plan_folds(views: list[TrainingView], folds: int, block_m: float, radius_m: float, seed: int) -> FoldPlan:
    """Deal spatial blocks of places to `folds` folds; ConfigError if there are fewer blocks than folds."""
    centres = _place_centres(views)
    blocks = defaultdict(list)
    for place, (east, north) in centres.items():
        blocks[(math.floor(east / block_m), math.floor(north / block_m))].append(place)
    if len(blocks) < folds:
        raise ConfigError(f"folds={folds} but the training places fill only {len(blocks)} spatial block(s) of "
                          f"{block_m:g} m: use fewer folds or a smaller fold_block_m")
    order = sorted(blocks)
    random.Random(seed).shuffle(order)
    # Largest blocks first, each to the fold with the fewest places so far: folds stay balanced.
    order.sort(key=lambda b: -len(blocks[b]))
    sizes, fold_of = [0] * folds, {}
    for block in order:
        fold = min(range(folds), key=lambda f: (sizes[f], f))
        sizes[fold] += len(blocks[block])
        fold_of.update({place: fold for place in blocks[block]})
    return FoldPlan(fold_of, _with_buffer(centres, fold_of, folds, radius_m), len(blocks))


def _place_centres(views: list[TrainingView]) -> dict[int, tuple[float, float]]:
    points = defaultdict(list)
    for v in views:
        points[v.place].append((v.east, v.north))
    return {place: tuple(np.mean(p, axis=0)) for place, p in sorted(points.items())}


def _with_buffer(centres: dict, fold_of: dict, folds: int, radius_m: float) -> tuple[frozenset[int], ...]:
    """Per fold, its places and every place within `radius_m` of one of them (by any view's centre)."""
    places = list(centres)
    tree = cKDTree(np.array([centres[p] for p in places]))
    excluded = [set() for _ in range(folds)]
    for i, place in enumerate(places):
        fold = fold_of[place]
        excluded[fold].update(places[j] for j in tree.query_ball_point(centres[place], radius_m))
    return tuple(frozenset(e) for e in excluded)
