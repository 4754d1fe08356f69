"""Billboard shapes: trees, lamps, poles, signs, traffic lights, cars, buses and pedestrians, drawn in local metres.

Each shape gets X (metres across, 0 at the object's axis), Z (metres above the ground) for the pixels
of its screen box, and returns parts: (mask, colour, emission) painted in order, later parts on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from structvpr.datasets.synth.city import BUS, CAR, LAMP, PEDESTRIAN, POLE, SIGN, TRAFFIC_LIGHT, TREE
from structvpr.datasets.synth.conditions import Condition
from structvpr.datasets.synth.noise import cell_noise

LABELS = {TREE: 4, LAMP: 3, POLE: 3, SIGN: 3, TRAFFIC_LIGHT: 3, CAR: 7, BUS: 7, PEDESTRIAN: 6}

CAR_COLOURS = np.array([
    [0.75, 0.75, 0.77], [0.10, 0.10, 0.11], [0.92, 0.92, 0.92], [0.55, 0.08, 0.08], [0.10, 0.20, 0.45],
    [0.35, 0.36, 0.38], [0.80, 0.65, 0.15], [0.15, 0.35, 0.20],
], np.float32)
CLOTHES = np.array([
    [0.10, 0.12, 0.25], [0.60, 0.10, 0.12], [0.85, 0.85, 0.82], [0.20, 0.20, 0.20], [0.25, 0.45, 0.30],
    [0.80, 0.55, 0.20], [0.45, 0.30, 0.50],
], np.float32)
SIGN_COLOURS = np.array([[0.80, 0.10, 0.10], [0.10, 0.30, 0.70], [0.95, 0.80, 0.10], [0.92, 0.92, 0.92]], np.float32)
POLE_GREY = np.array([0.28, 0.29, 0.30], np.float32)


@dataclass
class Sprite:
    """One object as seen from the camera: its size in metres and how it varies."""

    kind: int
    width: float  # projected width in metres
    height: float
    tone: float  # 0..1 per-object variation
    ident: int  # salt for the object's texture
    side_view: float = 1.0  # cars: 1 seen from the side, 0 from behind


def shape(s: Sprite, X: np.ndarray, Z: np.ndarray, px: float, cond: Condition) -> list[tuple]:
    """Parts of sprite `s` at local coordinates X, Z; px is metres per pixel (thin parts keep 1 pixel)."""
    draw = {TREE: _tree, LAMP: _lamp, POLE: _pole, SIGN: _sign, TRAFFIC_LIGHT: _traffic_light,
            CAR: _car, BUS: _bus, PEDESTRIAN: _pedestrian}[s.kind]
    return draw(s, X, Z, max(px, 1e-6) / 2, cond)


def _thin(half_width, half_px: float):
    return np.maximum(half_width, half_px)


def _pole(s, X, Z, hp, cond):
    return [(np.abs(X) < _thin(0.07, hp), POLE_GREY, 0.0)]


def _sign(s, X, Z, hp, cond):
    colour = SIGN_COLOURS[int(s.tone * len(SIGN_COLOURS)) % len(SIGN_COLOURS)]
    plate = (np.abs(X) < _thin(0.35, hp)) & (Z > s.height - 0.75)
    return _pole(s, X, Z, hp, cond) + [(plate, colour, 0.0)]


def _traffic_light(s, X, Z, hp, cond):
    box = (np.abs(X) < _thin(0.18, hp)) & (Z > s.height - 1.0)
    lamp = box & (np.abs(X) < 0.1) & ((Z - s.height + 0.5) % 0.3 < 0.18)
    return _pole(s, X, Z, hp, cond) + [(box, np.float32([0.08, 0.08, 0.08]), 0.0),
                                       (lamp, np.float32([0.9, 0.3, 0.1]), 0.6)]


def _lamp(s, X, Z, hp, cond):
    # The arm reaches toward the road; the billboard cannot know which way that is, so the tone decides.
    sign = 1.0 if s.tone < 0.5 else -1.0
    x = sign * X + s.width / 2 - 0.2  # 0 at the pole, increasing along the arm
    pole = np.abs(x) < _thin(0.09, hp)
    arm = (x > 0) & (x < s.width - 0.4) & (np.abs(Z - s.height + 0.15) < _thin(0.06, hp))
    head = (x > s.width - 0.9) & (x < s.width - 0.2) & (Z > s.height - 0.4) & (Z < s.height - 0.1)
    return [(pole, POLE_GREY, 0.0), (arm, POLE_GREY, 0.0), (head, np.float32([0.85, 0.85, 0.78]), 1.0)]


def lamp_head(s: Sprite) -> tuple[float, float]:
    """Local (X, Z) of a lamp's head centre, where its light comes from."""
    sign = 1.0 if s.tone < 0.5 else -1.0
    return sign * (s.width / 2 - 0.35), s.height - 0.25


def _tree(s, X, Z, hp, cond):
    trunk_top = 0.75 * s.height if cond.foliage == "bare" else 0.5 * s.height
    trunk = (np.abs(X) < _thin(0.16 * (1.2 - Z / s.height), hp)) & (Z < trunk_top)
    trunk_part = (trunk, np.float32([0.30, 0.22, 0.15]), 0.0)
    rx, ry, zc = s.width / 2, 0.34 * s.height, 0.64 * s.height
    r2 = (X / rx) ** 2 + ((Z - zc) / ry) ** 2
    lump = cell_noise(X, Z, 0.5, s.ident)
    fine = cell_noise(X, Z, 0.18, s.ident + 7)
    if cond.foliage == "bare":
        # Twigs: a sparse lattice inside the crown, grey-brown, dusted with snow in winter.
        twigs = (r2 < 1.0) & (fine > 0.5)
        colour = np.float32([0.82, 0.83, 0.86]) if cond.snow else np.float32([0.33, 0.28, 0.24])
        return [trunk_part, (twigs, colour, 0.0)]
    crown = r2 < 1.0 - 0.35 * lump
    if cond.foliage == "autumn":
        base = np.array([[0.80, 0.40, 0.08], [0.85, 0.65, 0.12], [0.65, 0.18, 0.08]], np.float32)
        colour = base[(lump * 3).astype(int) % 3] * (0.75 + 0.4 * fine)[..., None]
    else:
        green = np.float32([0.16, 0.36, 0.11]) * (0.8 + 0.25 * s.tone)
        colour = green * (0.65 + 0.6 * fine)[..., None]
    return [trunk_part, (crown, colour, 0.0)]


def _car(s, X, Z, hp, cond):
    body_colour = CAR_COLOURS[int(s.tone * len(CAR_COLOURS)) % len(CAR_COLOURS)]
    half = s.width / 2
    body = (np.abs(X) < half) & (Z > 0.3) & (Z < 1.0)
    taper = 0.5 + 0.25 * s.side_view - 0.25 * np.clip((Z - 1.0) / 0.45, 0, 1)
    cabin = (np.abs(X) < half * taper) & (Z >= 1.0) & (Z < 1.45)
    glass = cabin & (np.abs(X) < half * taper - 0.12) & (Z < 1.38)
    wx = half - 0.25 - 0.55 * s.side_view  # wheel centres move in when the car is seen end-on
    wheels = ((np.abs(X) - wx) ** 2 + (Z - 0.33) ** 2) < 0.33 ** 2
    lights = (np.abs(X) > half - 0.45) & (np.abs(X) < half - 0.1) & (Z > 0.65) & (Z < 0.8)
    return [(body, body_colour, 0.0), (cabin, body_colour * 0.9, 0.0), (glass, np.float32([0.12, 0.14, 0.17]), 0.0),
            (wheels, np.float32([0.05, 0.05, 0.05]), 0.0),
            (lights & (s.side_view < 0.7), np.float32([0.9, 0.2, 0.15]), 0.8)]


def _bus(s, X, Z, hp, cond):
    colour = np.float32([0.85, 0.55, 0.10]) if s.tone < 0.5 else np.float32([0.15, 0.35, 0.70])
    half = s.width / 2
    body = (np.abs(X) < half) & (Z > 0.35)
    band = body & (Z > 1.5) & (Z < 2.6) & (np.abs(X) < half - 0.2)
    wheels = ((np.abs(X) - (half - 1.2 * s.side_view - 0.3)) ** 2 + (Z - 0.45) ** 2) < 0.45 ** 2
    return [(body, colour, 0.0), (band, np.float32([0.10, 0.12, 0.15]), 0.3),
            (wheels, np.float32([0.05, 0.05, 0.05]), 0.0)]


def _pedestrian(s, X, Z, hp, cond):
    h = s.height
    top = CLOTHES[int(s.tone * len(CLOTHES)) % len(CLOTHES)]
    legs = (Z < 0.47 * h) & (np.abs(np.abs(X) - 0.09) < _thin(0.065, hp))
    torso = (Z >= 0.45 * h) & (Z < 0.82 * h) & (np.abs(X) < _thin(0.21 - 0.05 * (Z < 0.5 * h), hp))
    head = X ** 2 + (Z - 0.9 * h) ** 2 < _thin(0.11, hp) ** 2
    return [(legs, np.float32([0.15, 0.15, 0.20]), 0.0), (torso, top, 0.0),
            (head, np.float32([0.80, 0.62, 0.48]) * (0.5 + 0.6 * s.tone), 0.0)]
