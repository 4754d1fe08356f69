"""Traversals: the camera poses of the database ('day') and of every query condition, and their VG names."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from structvpr.datasets.synth.city import SPLITS, City
from structvpr.datasets.synth.presets import Preset
from structvpr.datasets.vg_names import VGName, format_vg_name

UTM_EAST0, UTM_NORTH0, UTM_ZONE, UTM_LETTER = 585000.0, 4477000.0, "17", "T"
ROLE_DIRS = {"database": "database", "query": "queries"}


@dataclass(frozen=True)
class Shot:
    """One image to render: which place, which traversal, and the exact pose."""

    split: str
    role: str  # database | query
    place: int  # index into city.places
    place_id: str
    condition: str
    traversal: int  # 0 is the day database; 1.. the query conditions in preset order
    x: float
    y: float
    yaw: float  # radians counter-clockwise from east

    @property
    def heading(self) -> float:
        """Compass heading in degrees (0 north, clockwise), as VG names carry it."""
        return (90.0 - math.degrees(self.yaw)) % 360.0

    @property
    def name(self) -> str:
        east, north = UTM_EAST0 + self.x, UTM_NORTH0 + self.y
        lat, lon = utm_to_latlon(east, north)
        return format_vg_name(VGName(
            east, north, UTM_ZONE, UTM_LETTER, f"{lat:.6f}", f"{lon:.6f}", pano_id=self.place_id,
            heading=f"{self.heading:.1f}", note=self.condition,
        ))

    def relpath(self, kind: str, ext: str) -> str:
        """Path under OUT: kind is 'images' or 'labels'."""
        stem = self.name[: -len(".jpg")]
        return f"{kind}/{self.split}/{ROLE_DIRS[self.role]}/{stem}{ext}"


def traversals(city: City, preset: Preset, seed: int) -> list[Shot]:
    """Every shot of the dataset, database first; queries revisit each place with a jittered pose."""
    places = city.places
    shots = []
    for t, condition in enumerate(("day",) + tuple(preset.query_conditions)):
        for p in range(len(places.ids)):
            x, y, yaw = places.xy[p, 0], places.xy[p, 1], places.yaw[p]
            if t > 0:
                x, y, yaw = _jitter(np.random.default_rng([seed, 3, t, p]), x, y, yaw)
            shots.append(Shot(SPLITS[places.split[p]], "database" if t == 0 else "query", p, places.ids[p],
                              condition, t, float(x), float(y), float(yaw)))
    return shots


def _jitter(rng: np.random.Generator, x: float, y: float, yaw: float) -> tuple[float, float, float]:
    """A few metres along the street, under one across, a few degrees of heading; never zero."""
    along = rng.uniform(1.0, 3.5) * rng.choice([-1.0, 1.0])
    across = rng.uniform(-0.8, 0.8)
    # The street axis is the place yaw rounded to the grid: jitter stays in the lane.
    axis = round(yaw / (math.pi / 2)) * (math.pi / 2)
    dx = along * math.cos(axis) - across * math.sin(axis)
    dy = along * math.sin(axis) + across * math.cos(axis)
    return x + dx, y + dy, yaw + math.radians(rng.uniform(-6.0, 6.0))


def utm_to_latlon(east: float, north: float, zone: int = int(UTM_ZONE)) -> tuple[float, float]:
    """Approximate inverse UTM (northern hemisphere), good to a few metres near the central meridian."""
    k0, a, e2 = 0.9996, 6378137.0, 0.00669438
    m = north / k0
    mu = m / (a * (1 - e2 / 4 - 3 * e2 ** 2 / 64))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi = mu + (3 * e1 / 2 - 27 * e1 ** 3 / 32) * math.sin(2 * mu) + (21 * e1 ** 2 / 16) * math.sin(4 * mu)
    n = a / math.sqrt(1 - e2 * math.sin(phi) ** 2)
    d = (east - 500000.0) / (n * k0)
    lat = phi - math.tan(phi) * d ** 2 / 2
    lon = math.radians((zone - 1) * 6 - 180 + 3) + d / math.cos(phi)
    return math.degrees(lat), math.degrees(lon)
