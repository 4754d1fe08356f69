"""Traffic: parked and moving cars, buses and pedestrians, drawn anew for every traversal."""

from __future__ import annotations

import numpy as np

from structvpr.datasets.synth.city import BUS, CAR, PEDESTRIAN, City, Props, Streets


def draw_traffic(city: City, seed: int, traversal: int) -> Props:
    """All dynamic objects of one traversal; the same (seed, traversal) gives the same street scene."""
    rng = np.random.default_rng([seed, 1, traversal])
    parts = []
    for streets, cross, along_x in ((city.ew, city.ns, True), (city.ns, city.ew, False)):
        lo, hi = cross.centre[0] - cross.edge[0], cross.centre[-1] + cross.edge[-1]
        for k in range(len(streets.centre)):
            for side in (-1.0, 1.0):
                parts.append(_street_side(rng, streets, k, side, lo, hi, along_x))
    return Props.concat(parts)


def _street_side(rng, streets: Streets, k: int, side: float, lo: float, hi: float, along_x: bool) -> Props:
    centre, half, walk = streets.centre[k], streets.half_width[k], streets.sidewalk[k]
    # Traffic keeps to the right: on the -y side (east-west) or +x side (north-south) cars head +s.
    heading = (0.0 if side < 0 else np.pi) if along_x else (np.pi / 2 if side > 0 else -np.pi / 2)
    slots = np.arange(lo, hi, 6.0)
    parked = slots[rng.random(len(slots)) < rng.uniform(0.1, 0.6)] + rng.uniform(-0.8, 0.8)
    moving = rng.uniform(lo, hi, rng.poisson((hi - lo) / 45.0))
    walkers = rng.uniform(lo, hi, rng.poisson((hi - lo) / 14.0))
    offsets = np.concatenate([
        np.full(len(parked), side * (half - 1.1)),
        np.full(len(moving), side * half / 2),
        side * (half + rng.uniform(0.5, max(walk - 0.3, 0.6), len(walkers))),
    ])
    s = np.concatenate([parked, moving, walkers])
    n_cars = len(parked) + len(moving)
    bus = rng.random(n_cars) < 0.04
    kind = np.concatenate([np.where(bus, BUS, CAR), np.full(len(walkers), PEDESTRIAN)])
    width = np.concatenate([np.where(bus, 11.0, rng.uniform(3.9, 4.8, n_cars)), np.full(len(walkers), 0.6)])
    height = np.concatenate([np.where(bus, 3.1, 1.5), rng.uniform(1.55, 1.9, len(walkers))])
    yaw = np.concatenate([np.full(n_cars, heading), rng.uniform(-np.pi, np.pi, len(walkers))])
    xy = np.stack([s, centre + offsets], 1) if along_x else np.stack([centre + offsets, s], 1)
    return Props(xy, kind.astype(int), width, height, rng.random(len(s)), yaw)
