"""The rasteriser: a 2.5D ray-caster (walls per column, floor casting, billboards) giving albedo, labels, depth.

Conventions: x east, y north, z up, metres; yaw in radians counter-clockwise from east. Column rays are
`forward + a * right` with a forward component of 1, so the ray parameter at a hit is the depth itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from structvpr.datasets.synth.city import LAMP, CAR, BUS, Buildings, City, Props, Streets
from structvpr.datasets.synth.conditions import Condition
from structvpr.datasets.synth.noise import cell_noise, hash_bits, unit
from structvpr.datasets.synth.sprites import LABELS, Sprite, lamp_head, shape

VOID, FLAT, CONSTRUCTION, OBJECT, NATURE, SKY, HUMAN, VEHICLE = range(8)
LAYERS = 5  # nearest wall hits kept per column: taller buildings behind shorter ones stay visible
WALL_RANGE = 500.0  # metres; farther walls are a few pixels at the vanishing point
SPRITE_RANGE = (3.5, 160.0)
KEEP_DISTANCE = 15.0  # metres
MIN_SPRITE_SHARE = 70  # objects shorter than 1/70 of the image height are skipped: too small to matter
SUN = np.array([-0.6, -0.8])  # from the south-south-west, for face shading


@dataclass(frozen=True)
class Camera:
    x: float
    y: float
    yaw: float
    height: float = 2.2
    hfov_deg: float = 90.0
    horizon: float = 0.6  # horizon row as a fraction of the height: the camera tilts up a little

    @property
    def forward(self) -> np.ndarray:
        return np.array([np.cos(self.yaw), np.sin(self.yaw)])

    @property
    def right(self) -> np.ndarray:
        return np.array([np.sin(self.yaw), -np.cos(self.yaw)])


@dataclass
class View:
    """Per-image ray geometry: column directions, row slopes, focal length in pixels."""

    cam: Camera
    width: int
    height: int
    focal: float = field(init=False)
    horizon_row: float = field(init=False)
    a: np.ndarray = field(init=False)  # (W,) rightward slope of each column
    b: np.ndarray = field(init=False)  # (H,) upward slope of each row
    dirs: np.ndarray = field(init=False)  # (W, 2) ray directions, forward component 1

    def __post_init__(self):
        self.focal = (self.width / 2) / np.tan(np.deg2rad(self.cam.hfov_deg) / 2)
        self.horizon_row = self.cam.horizon * self.height
        self.a = (np.arange(self.width) + 0.5 - self.width / 2) / self.focal
        self.b = (self.horizon_row - (np.arange(self.height) + 0.5)) / self.focal
        self.dirs = self.cam.forward[None, :] + self.a[:, None] * self.cam.right[None, :]


@dataclass
class Frame:
    """What the renderer knows about every pixel; conditions.finish turns it into the photo."""

    rgb: np.ndarray  # (H, W, 3) float32 albedo under daylight
    label: np.ndarray  # (H, W) uint8 category ids
    depth: np.ndarray  # (H, W) float32 metres along the view axis, inf for sky
    emissive: np.ndarray  # (H, W) float32 light sources (lit windows, lamp heads, car lights)
    lamps: list = field(default_factory=list)  # (x, y, radius, foot_row) of visible lamp heads


def render(city: City, props: Props, cam: Camera, cond: Condition, size: tuple[int, int],
           sky_phase: np.ndarray) -> Frame:
    """One image: props are the city's static objects followed by this traversal's traffic."""
    view = View(cam, *size)
    w, h = size
    frame = Frame(np.zeros((h, w, 3), np.float32), np.full((h, w), VOID, np.uint8),
                  np.full((h, w), np.inf, np.float32), np.zeros((h, w), np.float32))
    _sky(frame, view, cond, sky_phase)
    _ground(frame, view, city, cond)
    _walls(frame, view, city.buildings, cond)
    _billboards(frame, view, props, cond)
    return frame


# --- sky -------------------------------------------------------------------------------------------


def _sky(frame: Frame, view: View, cond: Condition, phase: np.ndarray) -> None:
    rows = view.b >= 0
    elev = np.clip(view.b[rows], 0.0, None)[:, None]
    t = np.clip(elev / 0.7, 0, 1) ** 0.6
    top, hor = np.asarray(cond.sky_top, np.float32), np.asarray(cond.sky_horizon, np.float32)
    colour = hor * (1 - t[..., None]) + top * t[..., None]
    cover = _clouds(view, elev, phase, cond.cloud_cover)
    colour = colour * (1 - cover[..., None]) + np.asarray(cond.cloud, np.float32) * cover[..., None]
    frame.rgb[rows] = np.broadcast_to(colour, (rows.sum(), view.width, 3))
    frame.label[rows] = SKY


def _clouds(view: View, elev: np.ndarray, phase: np.ndarray, cover: float) -> np.ndarray:
    """Cloud density from waves on a plane 1 km up, seen in perspective; phase is per traversal.

    Clouds are smooth: they are computed on every other row and column and then repeated.
    """
    h, w = len(elev), view.width
    if cover <= 0 or h == 0:
        return np.zeros((h, w), np.float32)
    e = elev[::2]
    reach = 1.0 / np.maximum(e, 0.04)  # horizontal distance to the cloud plane, in km
    az = view.cam.yaw - np.arctan(view.a[::2])[None, :]
    u, v = reach * np.cos(az), reach * np.sin(az)
    waves = sum(np.sin(f * (np.cos(p) * u + np.sin(p) * v) + q) for f, p, q in phase) / len(phase)
    density = np.clip((waves + cover - 0.5) * 2.2, 0, 1) * np.clip(e * 12, 0, 1)
    full = np.repeat(np.repeat(density.astype(np.float32) * 0.85, 2, axis=0), 2, axis=1)
    return full[:h, :w]


# --- ground ----------------------------------------------------------------------------------------


def _ground(frame: Frame, view: View, city: City, cond: Condition) -> None:
    rows = np.nonzero(view.b < 0)[0]
    depth = (view.cam.height / -view.b[rows])[:, None].astype(np.float32)  # (R, 1)
    dirs = view.dirs.astype(np.float32)
    gx = np.float32(view.cam.x) + depth * dirs[None, :, 0]
    gy = np.float32(view.cam.y) + depth * dirs[None, :, 1]
    colour, label = _ground_colour(gx, gy, city, cond)
    # Far texture aliases into speckle; fade it toward its mean the way a lens would blur it.
    fade = np.clip((depth - 35.0) / 150.0, 0, 1)[..., None].astype(np.float32)
    mean = np.float32([0.85, 0.85, 0.86]) if cond.snow else np.float32([0.40, 0.40, 0.40])
    frame.rgb[rows] = colour * (1 - fade) + mean * fade
    frame.label[rows] = label
    frame.depth[rows] = np.broadcast_to(depth, gx.shape)


def _nearest(streets: Streets, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest centre line of these streets, and that street's index."""
    c = streets.centre
    hi = np.clip(np.searchsorted(c, p), 0, len(c) - 1)
    lo = np.clip(hi - 1, 0, len(c) - 1)
    d_lo, d_hi = np.abs(p - c[lo]), np.abs(p - c[hi])
    idx = np.where(d_lo < d_hi, lo, hi)
    return np.minimum(d_lo, d_hi), idx


def _ground_colour(gx, gy, city: City, cond: Condition) -> tuple[np.ndarray, np.ndarray]:
    d_ew, k_ew = _nearest(city.ew, gy)
    d_ns, k_ns = _nearest(city.ns, gx)
    road_ew, road_ns = d_ew < city.ew.half_width[k_ew], d_ns < city.ns.half_width[k_ns]
    road = road_ew | road_ns
    walk = ~road & ((d_ew < city.ew.edge[k_ew]) | (d_ns < city.ns.edge[k_ns]))
    yard = ~road & ~walk
    grain = cell_noise(gx, gy, 0.25, 11)
    colour = np.empty(gx.shape + (3,), np.float32)
    if cond.snow:
        tracks = road & (np.abs((np.minimum(d_ew, d_ns) % 3.4) - 1.7) < 0.35)
        colour[:] = (0.88 + 0.08 * grain)[..., None]
        colour[road] = np.float32([0.70, 0.71, 0.73]) * (0.9 + 0.15 * grain[road])[:, None]
        colour[tracks] *= 0.7
    else:
        tiles = ((gx % 1.2) < 0.06) | ((gy % 1.2) < 0.06)
        colour[road] = (0.28 + 0.08 * grain[road])[:, None]
        colour[walk] = np.where(tiles[walk], 0.45, 0.6 + 0.08 * grain[walk])[:, None]
        colour[yard] = np.float32([0.22, 0.38, 0.15]) * (0.8 + 0.4 * grain[yard])[:, None]
        marks = _markings(gx, gy, d_ew, d_ns, road_ew, road_ns, walk | _crossing_band(city, d_ew, d_ns, k_ew, k_ns))
        colour[marks] = np.float32([0.85, 0.85, 0.80])
        if cond.foliage == "autumn":
            leaves = (walk | yard) & (cell_noise(gx, gy, 0.3, 5) > 0.8)
            colour[leaves] = np.float32([0.75, 0.40, 0.10])
    label = np.where(yard, NATURE, FLAT).astype(np.uint8)
    return colour, label


def _crossing_band(city: City, d_ew, d_ns, k_ew, k_ns) -> np.ndarray:
    """Where a sidewalk would continue across a road: zebra crossings go there."""
    ew_walk = (d_ew >= city.ew.half_width[k_ew]) & (d_ew < city.ew.edge[k_ew])
    ns_walk = (d_ns >= city.ns.half_width[k_ns]) & (d_ns < city.ns.edge[k_ns])
    return ew_walk | ns_walk


def _markings(gx, gy, d_ew, d_ns, road_ew, road_ns, band) -> np.ndarray:
    centre_ew = road_ew & ~road_ns & (d_ew < 0.12) & ((gx % 9.0) < 4.5)
    centre_ns = road_ns & ~road_ew & (d_ns < 0.12) & ((gy % 9.0) < 4.5)
    zebra_ew = road_ew & ~road_ns & band & ((gy % 1.0) < 0.5)
    zebra_ns = road_ns & ~road_ew & band & ((gx % 1.0) < 0.5)
    return centre_ew | centre_ns | zebra_ew | zebra_ns


# --- walls -----------------------------------------------------------------------------------------


def _candidates(view: View, b: Buildings) -> np.ndarray:
    """Indices of buildings in range and not wholly outside the field of view."""
    cam = np.array([view.cam.x, view.cam.y])
    cx = b.box[:, [0, 2, 2, 0]] - cam[0]
    cy = b.box[:, [1, 1, 3, 3]] - cam[1]
    fwd = cx * view.cam.forward[0] + cy * view.cam.forward[1]
    lat = cx * view.cam.right[0] + cy * view.cam.right[1]
    near = np.hypot(np.clip(cam[0], b.box[:, 0], b.box[:, 2]) - cam[0],
                    np.clip(cam[1], b.box[:, 1], b.box[:, 3]) - cam[1]) < WALL_RANGE
    # Each frustum side is a half-plane: a box with all four corners beyond one side is out of view.
    edge = view.a[-1] + 0.05
    left_out = np.all(lat < -edge * fwd, axis=1)
    right_out = np.all(lat > edge * fwd, axis=1)
    return np.nonzero(near & np.any(fwd > 0.01, axis=1) & ~left_out & ~right_out)[0]


def _wall_hits(view: View, b: Buildings, idx: np.ndarray):
    """Per column, the LAYERS nearest box entries: depth, building id, along-face coordinate, normal."""
    ox, oy = view.cam.x, view.cam.y
    dx, dy = view.dirs[:, 0:1], view.dirs[:, 1:2]
    dx = np.where(np.abs(dx) < 1e-9, 1e-9, dx)
    dy = np.where(np.abs(dy) < 1e-9, 1e-9, dy)
    box = b.box[idx]
    tx0, tx1 = (box[:, 0] - ox) / dx, (box[:, 2] - ox) / dx
    ty0, ty1 = (box[:, 1] - oy) / dy, (box[:, 3] - oy) / dy
    txn, tyn = np.minimum(tx0, tx1), np.minimum(ty0, ty1)
    t_in = np.maximum(txn, tyn)
    t_out = np.minimum(np.maximum(tx0, tx1), np.maximum(ty0, ty1))
    t = np.where((t_in < t_out) & (t_in > 0.05), t_in, np.inf)
    k = min(LAYERS, len(idx))
    part = np.argpartition(t, k - 1, axis=1)[:, :k] if k < len(idx) else np.tile(np.arange(k), (len(t), 1))
    order = np.argsort(np.take_along_axis(t, part, 1), axis=1)
    part = np.take_along_axis(part, order, 1)
    depth = np.take_along_axis(t, part, 1)
    x_face = np.take_along_axis(txn > tyn, part, 1)
    bid = idx[part]
    hx, hy = ox + depth * dx, oy + depth * dy
    u = np.where(x_face, hy - b.box[bid, 1], hx - b.box[bid, 0])
    nx, ny = np.broadcast_to(-np.sign(dx), depth.shape), np.broadcast_to(-np.sign(dy), depth.shape)
    normal = np.stack([np.where(x_face, nx, 0.0), np.where(x_face, 0.0, ny)], -1)
    return depth, bid, u, normal


def _walls(frame: Frame, view: View, b: Buildings, cond: Condition) -> None:
    idx = _candidates(view, b)
    if len(idx) == 0:
        return
    depth, bid, u, normal = _wall_hits(view, b, idx)
    tops = np.where(np.isfinite(depth), b.height[bid], 0.0)
    depth_f = np.where(np.isfinite(depth), depth, 1e9)
    layer = np.full((view.height, view.width), -1, np.int8)
    for k in reversed(range(depth.shape[1])):  # far to near: nearer walls overwrite
        z = view.cam.height + view.b[:, None] * depth_f[None, :, k]
        layer[(z >= 0) & (z < tops[None, :, k])] = k
    rr, cc = np.nonzero(layer >= 0)
    kk = layer[rr, cc]
    t = depth[cc, kk]
    z = view.cam.height + view.b[rr] * t
    lam = 0.62 + 0.38 * np.clip(normal[cc, kk] @ SUN, 0, 1)
    rgb, emit = _facade(b, bid[cc, kk], u[cc, kk].astype(np.float32), z.astype(np.float32),
                        (t / view.focal).astype(np.float32), cond)
    frame.rgb[rr, cc] = rgb * lam[:, None].astype(np.float32)
    frame.emissive[rr, cc] = emit
    frame.label[rr, cc] = CONSTRUCTION
    frame.depth[rr, cc] = t


def _facade(b: Buildings, bid, u, z, footprint, cond: Condition) -> tuple[np.ndarray, np.ndarray]:
    """Facade colour at along-face u and height z: wall, window grid, shop front, cornice; plus emission."""
    fh, sp, shop, top = b.floor_h[bid], b.win_spacing[bid], b.shop[bid], b.height[bid]
    ground_h = fh + shop * np.float32(1.2)
    zz = z - ground_h
    floor, col = np.floor(zz / fh), np.floor(u / sp)
    fz, su = zz / fh - floor, np.abs(u / sp - col - 0.5)
    win = (zz >= 0) & (z < top - 1.0) & (su < b.win_w[bid] / 2) & (fz > 0.3) & (fz < 0.3 + b.win_h[bid])
    shop_win = shop & (z > 0.5) & (z < ground_h - 0.6) & (su < 0.43)
    glazed = win | shop_win
    wall = (b.repaint if cond.repaint else b.colour)[bid]
    rgb = wall * (0.95 + 0.1 * cell_noise(u, z, 0.5, bid))[:, None]
    # Windows smaller than about a pixel blend into the wall rather than alias into speckle.
    share = np.clip((footprint - 0.15 * sp) / (0.25 * sp), 0, 1).astype(np.float32)
    cell = hash_bits(col, floor, bid)  # one hash per window: tint, lit or not, brightness
    glass = b.glass[bid] * (0.8 + 0.5 * unit(cell, 0))[:, None]
    rgb *= (1 - 0.5 * share)[:, None]
    rgb += glass * (0.5 * share)[:, None]
    rgb[glazed] = glass[glazed] * (1 - share[glazed, None]) + rgb[glazed] * share[glazed, None]
    rgb[~shop & (z < 2.3) & (col % 4 == 1) & (su < 0.18)] = (0.25, 0.18, 0.12)  # doors
    cornice = z > top - 0.7
    rgb[cornice] = wall[cornice] * 0.7
    lit = (win & (unit(cell, 1) < cond.window_lit)) | (shop_win & (unit(cell, 1) < 0.7))
    emit = np.zeros(len(bid), np.float32)
    emit[lit] = (0.55 + 0.45 * unit(cell[lit], 2)) * (1 - 0.5 * share[lit])
    return rgb, emit


# --- billboards ------------------------------------------------------------------------------------


def _billboards(frame: Frame, view: View, props: Props, cond: Condition) -> None:
    cam = np.array([view.cam.x, view.cam.y])
    rel = props.xy - cam
    fwd = rel @ view.cam.forward
    lat = rel @ view.cam.right
    angle = props.yaw - np.arctan2(rel[:, 1], rel[:, 0])  # object facing relative to the line of sight
    width = _projected_width(props, angle)
    visible = (fwd > SPRITE_RANGE[0]) & (fwd < SPRITE_RANGE[1]) & (np.abs(lat) < fwd * view.a[-1] + width)
    # The capture car keeps its distance: no vehicle fills the view from just ahead in its own lane.
    vehicle = (props.kind == CAR) | (props.kind == BUS)
    visible &= ~(vehicle & (fwd < KEEP_DISTANCE) & (np.abs(lat) < 2.0))
    visible &= props.height * view.focal / np.maximum(fwd, 1e-3) >= view.height / MIN_SPRITE_SHARE
    order = np.nonzero(visible)[0][np.argsort(-fwd[visible], kind="stable")]  # far to near
    boxes = _screen_boxes(view, fwd[order], lat[order], width[order], props.height[order])
    for i, (c0, c1, r0, r1), sx in zip(order, boxes, _axis_column(view, fwd[order], lat[order])):
        if c0 >= c1 or r0 >= r1 or not (frame.depth[r0:r1, c0:c1] > fwd[i]).any():
            continue  # off screen, or hidden behind a building: most objects of the next street are
        sprite = Sprite(int(props.kind[i]), float(width[i]), float(props.height[i]), float(props.tone[i]),
                        ident=int(i % 100003), side_view=float(abs(np.sin(angle[i]))))
        _paint(frame, view, sprite, float(fwd[i]), float(sx), (c0, c1, r0, r1), cond)


def _projected_width(props: Props, angle: np.ndarray) -> np.ndarray:
    """Cars and buses look as wide as their length from the side, as their width from behind."""
    vehicle = (props.kind == CAR) | (props.kind == BUS)
    across = np.where(props.kind == BUS, 2.5, 1.8)
    return np.where(vehicle, np.abs(np.sin(angle)) * props.width + np.abs(np.cos(angle)) * across, props.width)


def _axis_column(view: View, depth: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Screen column of each object's axis."""
    return view.width / 2 + view.focal * lat / depth


def _screen_boxes(view: View, depth, lat, width, height) -> np.ndarray:
    """(N, 4) integer screen boxes c0, c1, r0, r1 of upright objects standing on the ground."""
    f, hr = view.focal, view.horizon_row
    sx = _axis_column(view, depth, lat)
    half = width / 2 * f / depth + 1
    top = hr - f * (height - view.cam.height) / depth
    bottom = hr + f * view.cam.height / depth
    return np.stack([np.maximum(sx - half, 0).astype(int), np.minimum(np.ceil(sx + half), view.width).astype(int),
                     np.maximum(top, 0).astype(int), np.minimum(np.ceil(bottom), view.height).astype(int)], 1)


def _paint(frame: Frame, view: View, s: Sprite, depth: float, sx: float, box: tuple, cond: Condition) -> None:
    c0, c1, r0, r1 = box
    hr, m_px = view.horizon_row, depth / view.focal
    Z = (view.cam.height + (hr - (np.arange(r0, r1, dtype=np.float32) + 0.5)) * m_px)[:, None]
    X = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - sx) * m_px)[None, :]
    front = (frame.depth[r0:r1, c0:c1] > depth) & (Z >= 0) & (Z < s.height)
    rgb, emissive = frame.rgb[r0:r1, c0:c1], frame.emissive[r0:r1, c0:c1]
    union = np.zeros_like(front)
    for mask, colour, emit in shape(s, X, Z, m_px, cond):
        m = mask & front
        rgb[m] = colour[m] if np.ndim(colour) == 3 else colour
        emissive[m] = emit
        union |= m
    frame.label[r0:r1, c0:c1][union] = LABELS[s.kind]
    frame.depth[r0:r1, c0:c1][union] = depth
    if s.kind == LAMP:
        _note_lamp(frame, view, s, depth, sx, hr + view.focal * view.cam.height / depth)


def _note_lamp(frame: Frame, view: View, s: Sprite, depth: float, sx: float, bottom: float) -> None:
    hx, hz = lamp_head(s)
    x = sx + hx * view.focal / depth
    y = view.horizon_row - (hz - view.cam.height) * view.focal / depth
    r = max(1.5 * view.focal / depth, 1.0)
    xi, yi = int(np.clip(x, 0, view.width - 1)), int(np.clip(y, 0, view.height - 1))
    if frame.depth[yi, xi] >= depth - 0.5:  # the head is not hidden behind a nearer wall
        frame.lamps.append((x, y, r, bottom))
