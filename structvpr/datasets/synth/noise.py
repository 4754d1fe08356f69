"""Cheap deterministic noise: integer hashes of world coordinates, so textures stick to the world across views."""

from __future__ import annotations

import numpy as np


def hash_bits(a: np.ndarray, b: np.ndarray, salt: int | np.ndarray = 0) -> np.ndarray:
    """A well-mixed int64 per cell of an integer lattice; the same cell gives the same bits in every image."""
    with np.errstate(over="ignore"):
        h = (np.asarray(a, np.int64) * 73856093) ^ (np.asarray(b, np.int64) * 19349663)
        h = h ^ (np.asarray(salt, np.int64) * 83492791)
        h = (h ^ (h >> 13)) * 1274126177
        return h ^ (h >> 16)


def unit(bits: np.ndarray, field: int = 0) -> np.ndarray:
    """Byte `field` (0..3) of hash bits as a float in [0, 1): several independent draws from one hash."""
    return ((bits >> (4 + 8 * field)) & 0xFF).astype(np.float32) / 256.0


def hash01(a: np.ndarray, b: np.ndarray, salt: int | np.ndarray = 0) -> np.ndarray:
    """A float in [0, 1) per cell of an integer lattice."""
    return ((hash_bits(a, b, salt) >> 4) & 0xFFFF).astype(np.float32) / 65536.0


def cell_noise(x: np.ndarray, y: np.ndarray, scale: float, salt: int | np.ndarray = 0) -> np.ndarray:
    """hash01 of the cell of side `scale` metres that (x, y) falls in."""
    return hash01(np.floor(x / scale), np.floor(y / scale), salt)
