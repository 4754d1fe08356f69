"""Appearance conditions: what changes between traversals (light, sky, season, fog, paint) while structure stays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKY_LABEL = 5


@dataclass(frozen=True)
class Condition:
    """One traversal's look. The renderer reads the material choices, `finish` the light and the air."""

    name: str
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    cloud: tuple[float, float, float] = (0.95, 0.95, 0.97)
    cloud_cover: float = 0.35  # 0 clear .. 1 overcast
    foliage: str = "leafy"  # leafy | autumn | bare
    snow: bool = False
    repaint: bool = False
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)  # multiplies everything but the sky
    emission: float = 0.0  # strength of lit windows, lamp heads and car lights
    lamp_glow: float = 0.0
    fog_distance: float | None = None  # metres at which 63% of the colour is fog
    fog_colour: tuple[float, float, float] = (0.78, 0.79, 0.80)
    haze: float = 0.0  # flat veil that lowers contrast
    noise: float = 0.0  # sensor noise sigma, in 0..1 units
    window_lit: float = 0.35  # share of windows lit when emission is on


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("day", sky_top=(0.30, 0.52, 0.86), sky_horizon=(0.72, 0.83, 0.95)),
    Condition(
        "night", sky_top=(0.01, 0.01, 0.04), sky_horizon=(0.10, 0.08, 0.12), cloud=(0.12, 0.10, 0.12),
        cloud_cover=0.3, light=(0.07, 0.08, 0.12), emission=1.0, lamp_glow=1.0, noise=0.035, window_lit=0.4,
    ),
    Condition(
        "dusk", sky_top=(0.18, 0.16, 0.38), sky_horizon=(0.98, 0.55, 0.30), cloud=(0.85, 0.45, 0.40),
        light=(0.55, 0.40, 0.36), emission=0.7, lamp_glow=0.5, noise=0.015, window_lit=0.3,
    ),
    Condition(
        "winter", sky_top=(0.74, 0.77, 0.80), sky_horizon=(0.86, 0.87, 0.89), cloud=(0.80, 0.81, 0.83),
        cloud_cover=0.9, foliage="bare", snow=True, light=(0.92, 0.95, 1.02), haze=0.15,
    ),
    Condition(
        "autumn", sky_top=(0.45, 0.58, 0.78), sky_horizon=(0.82, 0.82, 0.80), cloud_cover=0.55,
        foliage="autumn", light=(1.0, 0.92, 0.80),
    ),
    Condition(
        "fog", sky_top=(0.78, 0.79, 0.80), sky_horizon=(0.78, 0.79, 0.80), cloud_cover=0.0,
        light=(0.85, 0.86, 0.88), fog_distance=16.0,
    ),
    Condition("repainted", sky_top=(0.30, 0.52, 0.86), sky_horizon=(0.72, 0.83, 0.95), repaint=True),
)}

WARM = np.array([1.0, 0.78, 0.42], np.float32)


def finish(rgb: np.ndarray, label: np.ndarray, depth: np.ndarray, emissive: np.ndarray,
           lamps: np.ndarray, cond: Condition, rng: np.random.Generator) -> np.ndarray:
    """Light, glow, fog, haze and noise on the renderer's albedo; returns uint8 RGB."""
    light = np.where((label != SKY_LABEL)[..., None], np.asarray(cond.light, np.float32), np.float32(1.0))
    out = rgb * light
    if cond.emission:
        out += emissive[..., None] * (WARM * cond.emission)
    if cond.lamp_glow and len(lamps):
        out += _glow(out.shape[:2], lamps)[..., None] * (WARM * cond.lamp_glow)
    if cond.fog_distance:
        keep = np.exp(-np.minimum(depth, 1e4) / np.float32(cond.fog_distance))[..., None]
        out = out * keep + np.asarray(cond.fog_colour, np.float32) * (1 - keep)
    if cond.haze:
        out = out * np.float32(1 - cond.haze) + np.float32(cond.haze)
    if cond.noise:
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(cond.noise)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _glow(shape: tuple[int, int], lamps: np.ndarray) -> np.ndarray:
    """Halo around each lamp head plus a pool of light on the ground below it. lamps: (N, 4) x, y, r, foot_row."""
    out = np.zeros(shape, np.float32)
    for x, y, r, foot in lamps:
        _add_blob(out, x, y, 3 * r, 3 * r, 0.8)
        # The pool is wide and flat: the lamp lights the road in an ellipse around its foot.
        _add_blob(out, x, foot, 12 * r, 3 * r, 0.35)
    return out


def _add_blob(out: np.ndarray, x: float, y: float, rx: float, ry: float, gain: float) -> None:
    """Add a Gaussian of radii rx/3, ry/3 at (x, y), computed only in its 3-sigma box."""
    h, w = out.shape
    c0, c1 = max(int(x - rx), 0), min(int(x + rx) + 1, w)
    r0, r1 = max(int(y - ry), 0), min(int(y + ry) + 1, h)
    if c0 >= c1 or r0 >= r1:
        return
    cols = ((np.arange(c0, c1, dtype=np.float32) - x) / (rx / 3))[None, :]
    rows = ((np.arange(r0, r1, dtype=np.float32) - y) / (ry / 3))[:, None]
    out[r0:r1, c0:c1] += gain * np.exp(-0.5 * (cols ** 2 + rows ** 2))
