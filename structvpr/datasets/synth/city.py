"""City layout: a street grid lined with buildings, trees, poles and lamps (the structure all conditions share)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structvpr.datasets.synth.presets import Preset

# Billboard kinds; cars and pedestrians come from traffic.py, one draw per traversal.
TREE, LAMP, POLE, SIGN, TRAFFIC_LIGHT, CAR, PEDESTRIAN, BUS = range(8)

# Facade colours (linear-ish RGB in 0..1): brick, sandstone, cream, concrete, white, brown, ochre, terracotta, slate.
FACADE_PALETTE = np.array([
    [0.55, 0.27, 0.20], [0.78, 0.68, 0.50], [0.88, 0.84, 0.72], [0.55, 0.55, 0.53], [0.90, 0.90, 0.88],
    [0.42, 0.32, 0.25], [0.80, 0.62, 0.30], [0.70, 0.40, 0.28], [0.40, 0.44, 0.50],
], dtype=np.float32)
# Repainted facades: loud colours, each chosen far in brightness from the building's day colour.
REPAINT_PALETTE = np.array([
    [0.15, 0.35, 0.65], [0.85, 0.20, 0.25], [0.20, 0.60, 0.35], [0.95, 0.80, 0.15], [0.12, 0.12, 0.14],
    [0.60, 0.25, 0.65], [0.95, 0.55, 0.75], [0.25, 0.75, 0.80], [0.98, 0.98, 0.98],
], dtype=np.float32)
PARK_SHARE = 0.08  # of blocks left as a park
LOT_SHARE = 0.1  # of frontage segments left as a green lot
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Streets:
    """Parallel streets of one direction: centre line (x for north-south, y for east-west), widths."""

    centre: np.ndarray
    half_width: np.ndarray  # of the road, curb to curb
    sidewalk: np.ndarray

    @property
    def edge(self) -> np.ndarray:
        """Distance from the centre line to the property line (road plus sidewalk)."""
        return self.half_width + self.sidewalk


@dataclass
class Buildings:
    """Axis-aligned building boxes and their facade parameters, one row per building."""

    box: np.ndarray  # (N, 4) x0, y0, x1, y1
    height: np.ndarray
    floor_h: np.ndarray
    win_spacing: np.ndarray
    win_w: np.ndarray  # window width as a fraction of the spacing
    win_h: np.ndarray  # window height as a fraction of the floor
    shop: np.ndarray  # bool: shop windows on the ground floor
    colour: np.ndarray  # (N, 3)
    repaint: np.ndarray  # (N, 3) the facade colour under the 'repainted' condition
    glass: np.ndarray  # (N, 3) window glass


@dataclass
class Props:
    """Billboard objects: position, size, kind and a per-object variation in 0..1."""

    xy: np.ndarray  # (N, 2)
    kind: np.ndarray  # (N,) int
    width: np.ndarray
    height: np.ndarray
    tone: np.ndarray
    yaw: np.ndarray  # facing of the object (cars: driving direction), radians

    @staticmethod
    def concat(parts: list["Props"]) -> "Props":
        parts = [p for p in parts if len(p.kind)]
        if not parts:
            return Props(np.zeros((0, 2)), np.zeros(0, int), *(np.zeros(0) for _ in range(4)))
        return Props(*(np.concatenate([getattr(p, f) for p in parts]) for f in Props.__dataclass_fields__))


@dataclass
class Places:
    """The places a traversal visits: camera position, yaw (radians from east, counter-clockwise), split."""

    xy: np.ndarray  # (N, 2)
    yaw: np.ndarray
    split: np.ndarray  # (N,) index into SPLITS
    ids: list[str]


@dataclass
class City:
    ew: Streets  # streets running east-west: centre is a y
    ns: Streets  # streets running north-south: centre is an x
    buildings: Buildings
    props: Props
    places: Places


SPLITS = ("train", "val", "test")


def build_city(preset: Preset, seed: int) -> City:
    """The whole city from (preset, seed); every worker rebuilds the same one."""
    rng = np.random.default_rng([seed, 0])
    ns = _streets(rng, preset.blocks_x, lengths=(70.0, 130.0))
    ew = _streets(rng, preset.blocks_y, lengths=(48.0, 80.0))
    buildings, lots = _buildings(rng, ew, ns)
    props = Props.concat([_street_props(rng, ew, ns, along_x=True), _street_props(rng, ns, ew, along_x=False),
                          _lot_trees(rng, lots)])
    places = _places(rng, preset, ew, ns)
    return City(ew, ns, buildings, props, places)


def _streets(rng: np.random.Generator, blocks: int, lengths: tuple[float, float]) -> Streets:
    half = rng.choice([3.5, 5.0, 5.0, 7.0], size=blocks + 1)  # 2, 3 or 4 lanes
    walk = rng.choice([2.5, 3.5, 4.5], size=blocks + 1)
    gaps = rng.uniform(*lengths, size=blocks)  # block extent between property lines
    centre = np.zeros(blocks + 1)
    for i in range(blocks):
        centre[i + 1] = centre[i] + half[i] + walk[i] + gaps[i] + walk[i + 1] + half[i + 1]
    return Streets(centre.astype(np.float32), half.astype(np.float32), walk.astype(np.float32))


def _buildings(rng: np.random.Generator, ew: Streets, ns: Streets) -> tuple[Buildings, list[tuple]]:
    rows, lots = [], []
    for i in range(len(ns.centre) - 1):
        for j in range(len(ew.centre) - 1):
            block = (ns.centre[i] + ns.edge[i], ew.centre[j] + ew.edge[j],
                     ns.centre[i + 1] - ns.edge[i + 1], ew.centre[j + 1] - ew.edge[j + 1])
            block_rows, block_lots = _block(rng, block, floors=_district_floors(rng))
            rows += block_rows
            lots += block_lots
    rows += _perimeter_buildings(rng, ew, ns)
    return _facades(rng, np.array(rows, dtype=np.float64)), lots


def _district_floors(rng: np.random.Generator) -> tuple[int, int]:
    # Neighbourhoods differ (houses, mid-rise, towers): skylines then differ from street to street.
    return [(1, 3), (2, 5), (3, 8), (4, 11), (6, 18)][rng.integers(5)]


def _block(rng, block, floors) -> tuple[list[tuple], list[tuple]]:
    """Buildings (x0, y0, x1, y1, floors) along the four sides of a block, and green lots (x0, y0, x1, y1)."""
    if rng.random() < PARK_SHARE:
        return [], [block]
    x0, y0, x1, y1 = block
    rows, lots = [], []
    for side in ("south", "north", "west", "east"):
        lo, hi = (x0, x1) if side in ("south", "north") else (y0 + 10.0, y1 - 10.0)
        for a, b, setback, depth, is_lot in _frontage(rng, lo, hi):
            rect = _side_rect(block, side, a, b, setback, depth)
            if is_lot:
                lots.append(rect)
            else:
                rows.append((*rect, rng.integers(floors[0], floors[1] + 1)))
    return rows, lots


def _side_rect(block, side: str, a: float, b: float, setback: float, depth: float) -> tuple:
    """The footprint from a to b along one side of a block, `setback` behind the property line."""
    x0, y0, x1, y1 = block
    return {
        "south": (a, y0 + setback, b, y0 + setback + depth),
        "north": (a, y1 - setback - depth, b, y1 - setback),
        "west": (x0 + setback, a, x0 + setback + depth, b),
        "east": (x1 - setback - depth, a, x1 - setback, b),
    }[side]


def _frontage(rng, lo: float, hi: float) -> list[tuple[float, float, float, float, bool]]:
    """Split one block side into (start, end, setback, depth, is_lot): buildings, gaps, now and then a green lot."""
    out, s = [], lo
    while s < hi - 4.0:
        if rng.random() < LOT_SHARE:
            width = min(rng.uniform(12.0, 30.0), hi - s)
            out.append((s, s + width, 0.0, 16.0, True))
        else:
            width = min(rng.uniform(7.0, 32.0), hi - s)
            setback = rng.uniform(0.5, 5.0) if rng.random() < 0.3 else 0.0
            out.append((s, s + width, setback, rng.uniform(10.0, 22.0), False))
        s += width + (rng.uniform(3.0, 12.0) if rng.random() < 0.25 else 0.0)
    return out


def _lot_trees(rng, lots: list[tuple]) -> Props:
    """Trees scattered over parks and green lots: landmarks that set one stretch of street apart."""
    xy = []
    for x0, y0, x1, y1 in lots:
        n = max(1, int((x1 - x0) * (y1 - y0) / 90.0))
        xy.append(np.stack([rng.uniform(x0 + 2, x1 - 2, n), rng.uniform(y0 + 2, y1 - 2, n)], 1))
    if not xy:
        return Props.concat([])
    xy = np.concatenate(xy)
    n = len(xy)
    return Props(xy, np.full(n, TREE), rng.uniform(4.0, 7.5, n), rng.uniform(6.0, 12.0, n), rng.random(n),
                 np.zeros(n))


def _perimeter_buildings(rng, ew: Streets, ns: Streets) -> list[tuple]:
    """A row of buildings outside the outer streets, so that no street runs off into the void."""
    west, east = ns.centre[0] - ns.edge[0], ns.centre[-1] + ns.edge[-1]
    south, north = ew.centre[0] - ew.edge[0], ew.centre[-1] + ew.edge[-1]
    out = []
    for a, b, setback, depth, _ in _frontage(rng, west - 30.0, east + 30.0):
        out.append((a, south - setback - depth, b, south - setback, rng.integers(3, 9)))
        out.append((a, north + setback, b, north + setback + depth, rng.integers(3, 9)))
    for a, b, setback, depth, _ in _frontage(rng, south, north):
        out.append((west - setback - depth, a, west - setback, b, rng.integers(3, 9)))
        out.append((east + setback, a, east + setback + depth, b, rng.integers(3, 9)))
    return out


def _facades(rng, rows: np.ndarray) -> Buildings:
    n = len(rows)
    floor_h = rng.uniform(2.9, 3.9, n)
    shop = rng.random(n) < 0.4
    tower = (rows[:, 4] >= 9) & (rng.random(n) < 0.5)
    # A shop's ground floor is taller; the roof line sits a parapet above the last floor.
    height = rows[:, 4] * floor_h + np.where(shop, 1.2, 0.0) + rng.uniform(0.3, 1.5, n)
    colour_idx = rng.integers(len(FACADE_PALETTE), size=n)
    colour = FACADE_PALETTE[colour_idx] * rng.uniform(0.85, 1.1, (n, 1)).astype(np.float32)
    colour = np.where(tower[:, None], np.array([0.45, 0.52, 0.58], np.float32), colour)
    f32 = np.float32
    return Buildings(
        box=rows[:, :4], height=height.astype(f32), floor_h=floor_h.astype(f32),
        win_spacing=rng.uniform(2.4, 4.2, n).astype(f32),
        win_w=np.where(tower, 0.9, rng.uniform(0.35, 0.65, n)).astype(f32),
        win_h=np.where(tower, 0.85, rng.uniform(0.35, 0.6, n)).astype(f32),
        shop=shop, colour=np.clip(colour, 0, 1), repaint=_repaint_colours(rng, colour),
        glass=(np.array([0.22, 0.27, 0.33]) * rng.uniform(0.7, 1.3, (n, 1))).astype(f32),
    )


def _repaint_colours(rng, colour: np.ndarray) -> np.ndarray:
    """A new facade colour per building, far in brightness from the old one, so the change is not a tint."""
    luma_old = colour @ LUMA
    luma_new = REPAINT_PALETTE @ LUMA
    far = np.abs(luma_old[:, None] - luma_new[None, :]) > 0.3
    score = rng.random(far.shape) + far  # any far colour beats every near one
    return REPAINT_PALETTE[np.argmax(score, axis=1)]


def _street_props(rng, streets: Streets, cross: Streets, along_x: bool) -> Props:
    """Trees, lamps, poles and signs on both sidewalks of every street of one direction."""
    parts = []
    lo, hi = cross.centre[0] - cross.edge[0], cross.centre[-1] + cross.edge[-1]
    for k, centre in enumerate(streets.centre):
        for side in (-1.0, 1.0):
            curb = centre + side * (streets.half_width[k] + 0.7)
            parts.append(_row(rng, lo, hi, curb, cross, along_x, side))
    return Props.concat(parts)


def _row(rng, lo, hi, curb, cross: Streets, along_x: bool, side: float) -> Props:
    items = []  # (s, kind, width, height)
    if rng.random() < 0.55:  # a tree-lined sidewalk, or none: streets differ
        spacing = rng.uniform(6.5, 11.0)
        for s in np.arange(lo + rng.uniform(0, spacing), hi, spacing):
            items.append((s, TREE, rng.uniform(3.5, 6.5), rng.uniform(5.5, 10.0)))
    lamp_spacing = rng.uniform(22.0, 38.0)
    for s in np.arange(lo + rng.uniform(0, lamp_spacing), hi, lamp_spacing):
        items.append((s + 2.0, LAMP, 2.4, rng.uniform(6.5, 8.5)))
    for s in rng.uniform(lo, hi, size=int((hi - lo) / 45.0)):
        kind = [POLE, SIGN, SIGN][rng.integers(3)]
        items.append((s, kind, 0.8, rng.uniform(2.8, 4.5)))
    for c, e in zip(cross.centre, cross.edge):
        if rng.random() < 0.5:
            items.append((c - side * (e + 1.0), TRAFFIC_LIGHT, 0.9, 4.2))
    items = [it for it in items if not _in_crossing(it[0], cross)]
    if not items:
        return Props.concat([])
    s, kind, width, height = (np.array(v) for v in zip(*items))
    xy = np.stack([s, np.full_like(s, curb)], 1) if along_x else np.stack([np.full_like(s, curb), s], 1)
    return Props(xy, kind.astype(int), width, height, rng.random(len(s)), np.zeros(len(s)))


def _in_crossing(s: float, cross: Streets) -> bool:
    return bool(np.any(np.abs(s - cross.centre) < cross.edge - 0.2))


def _places(rng, preset: Preset, ew: Streets, ns: Streets) -> Places:
    """Places along the interior streets, each with a heading roughly along its street; split by x band."""
    rows = []  # x, y, yaw
    for j in range(1, len(ew.centre) - 1):
        for s in _stations(rng, ns.centre[0], ns.centre[-1], preset.place_spacing):
            rows.append(_pose(rng, s, ew.centre[j], ew.half_width[j], along_x=True))
    for i in range(1, len(ns.centre) - 1):
        for s in _stations(rng, ew.centre[0], ew.centre[-1], preset.place_spacing):
            rows.append(_pose(rng, ns.centre[i], s, ns.half_width[i], along_x=False))
    rows = np.array(rows)
    split = _split_bands(rows[:, 0], ns.centre[0], ns.centre[-1], preset)
    keep = split >= 0
    rows, split = rows[keep], split[keep]
    order = np.lexsort((rows[:, 1], rows[:, 0], split))
    rows, split = rows[order], split[order]
    return Places(rows[:, :2], rows[:, 2], split, [f"p{k:06d}" for k in range(len(rows))])


def _stations(rng, lo: float, hi: float, spacing: float) -> np.ndarray:
    s = np.arange(lo + spacing / 2, hi, spacing)
    return s + rng.uniform(-0.2, 0.2, len(s)) * spacing


def _pose(rng, x: float, y: float, half_width: float, along_x: bool) -> tuple[float, float, float]:
    forward = rng.random() < 0.5
    lane = half_width / 2  # drive on the right
    offset = np.deg2rad(rng.uniform(-22.0, 22.0))
    if along_x:
        yaw = 0.0 if forward else np.pi
        return x, y - lane if forward else y + lane, yaw + offset
    yaw = np.pi / 2 if forward else -np.pi / 2
    return (x + lane if forward else x - lane), y, yaw + offset


def _split_bands(x: np.ndarray, lo: float, hi: float, preset: Preset) -> np.ndarray:
    """Split index per place by x band; -1 for places in the gaps that keep the splits apart."""
    usable = hi - lo - 2 * preset.split_gap
    f_train, f_val, _ = preset.split_fractions
    a = lo + f_train * usable
    b = a + preset.split_gap + f_val * usable
    split = np.full(len(x), -1)
    split[x < a] = 0
    split[(x >= a + preset.split_gap) & (x < b)] = 1
    split[x >= b + preset.split_gap] = 2
    return split
