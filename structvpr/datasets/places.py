"""Grouping training images into places: the dataset's own place ids, else anchors at the database images.

Formats without place ids (VG, MSLS) get places anchored at their database
images: each query joins the nearest database image within a radius that
faces the same way. A fixed UTM grid would cut places at cell borders and
merge neighbours; anchoring keeps one place per reference view.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from structvpr.datasets.records import ImageRecord, Skip


@dataclass(frozen=True)
class PlaceOptions:
    radius_m: float = 10.0  # a query joins a database image at most this far away
    max_heading_diff: float = 60.0  # ... facing at most this many degrees away (where headings are known)
    candidates: int = 8  # nearest anchors looked at before giving up on heading


def heading_diff(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def group_places(records: list[ImageRecord], opts: PlaceOptions = PlaceOptions()) -> tuple[dict[str, list[ImageRecord]], list[Skip]]:
    """Places in a stable order, each with its images in a stable order, plus the images no place took."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    unplaced = []
    for rec in records:
        if rec.place_id:
            groups[str(rec.place_id)].append(rec)
        else:
            unplaced.append(rec)
    skipped = _anchor_places(unplaced, groups, opts)
    return {key: sorted(groups[key], key=lambda r: (r.role, r.name)) for key in sorted(groups)}, skipped


def _anchor_places(records: list[ImageRecord], groups: dict, opts: PlaceOptions) -> list[Skip]:
    anchors = sorted((r for r in records if r.role == "database"), key=lambda r: r.name)
    others = sorted((r for r in records if r.role != "database"), key=lambda r: r.name)
    for i, anchor in enumerate(anchors):
        groups[_anchor_id(i, anchor)].append(anchor)
    if not others:
        return []
    if not anchors:
        return [Skip(r.path, "no database image in this split to anchor places at", "no_place") for r in others]
    tree = cKDTree(np.array([[a.utm_east, a.utm_north] for a in anchors]))
    k = min(opts.candidates, len(anchors))
    dists, idxs = tree.query(np.array([[r.utm_east, r.utm_north] for r in others]), k=k)
    dists, idxs = np.reshape(dists, (len(others), k)), np.reshape(idxs, (len(others), k))
    skipped = []
    for rec, dist_row, idx_row in zip(others, dists, idxs):
        match = next((int(j) for d, j in zip(dist_row, idx_row)
                      if d <= opts.radius_m and heading_diff(rec.heading, anchors[j].heading) <= opts.max_heading_diff), None)
        if match is None:
            skipped.append(Skip(rec.path, f"no database image within {opts.radius_m} m facing the same way: its place is unknown", "no_place"))
        else:
            groups[_anchor_id(match, anchors[match])].append(rec)
    return skipped


def _anchor_id(index: int, anchor: ImageRecord) -> str:
    return f"{anchor.split}_anchor_{index:07d}"


def pick_views(images: list[ImageRecord], k: int) -> list[ImageRecord]:
    """Up to k views of a place, spread over conditions first so a place shows its variety."""
    by_condition: dict[str, list[ImageRecord]] = defaultdict(list)
    for rec in images:
        by_condition[rec.condition].append(rec)
    queues = [by_condition[c] for c in sorted(by_condition)]
    chosen: list[ImageRecord] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return chosen
