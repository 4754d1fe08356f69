"""Helpers the format readers share: image listing, layout checks, CSV columns, flags, lat/lon -> UTM."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path

from structvpr.datasets.records import DatasetError, ImageRecord, Listing, Skip

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# WGS84 ellipsoid and the UTM constants (NIMA TR8350.2; Snyder 1987, "Map Projections", ch. 8).
_A = 6378137.0
_F = 1 / 298.257223563
_K0 = 0.9996
_FALSE_EASTING = 500_000.0
_FALSE_NORTHING_SOUTH = 10_000_000.0


def absolute(path: str | Path) -> str:
    # abspath, not resolve(): keep the user's symlinked dataset folders as they gave them.
    return os.path.abspath(path)


def collect(entries: Iterable[ImageRecord | Skip]) -> Listing:
    """Sort what a reader found into records and skips, keeping the order it found them in."""
    listing = Listing()
    for entry in entries:
        (listing.records if isinstance(entry, ImageRecord) else listing.skipped).append(entry)
    return listing


def finite_utm(east: float, north: float) -> bool:
    return math.isfinite(east) and math.isfinite(north)


def is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Entries directly in `folder` named like images, sorted by name so listings are reproducible.

    Regular files or not: a reader records the others with `not_a_file` instead of dropping them silently.
    """
    return sorted(p for p in folder.iterdir() if is_image_name(p))


def not_a_file(path: Path) -> Skip | None:
    """A skip for an image entry that is not a readable regular file (dangling link, folder, pipe); else None."""
    if path.is_file():
        return None
    what = "a symbolic link to nothing" if path.is_symlink() and not path.exists() else "not a regular file"
    return Skip(absolute(path), f"{what}; put the image file there or remove the entry", "unreadable_image")


def require_folder(folder: Path, layout: str) -> Path:
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} is missing; expected layout: {layout}")
    return folder


def require_images(folder: Path, layout: str) -> list[Path]:
    images = list_images(require_folder(folder, layout))
    if not images:
        raise DatasetError(
            f"folder {folder} holds no images ({'/'.join(IMAGE_EXTENSIONS)}); expected layout: {layout}"
        )
    return images


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts; a missing required column, or a file that is not UTF-8 CSV, is an error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DatasetError(f"{path} lacks column(s) {missing}; it has {columns}")
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path} is not a readable UTF-8 CSV file ({exc}); re-download it") from None


def parse_flag(value: str | None) -> bool | None:
    """pandas writes booleans as True/False; accept 1/0 and yes/no too. None when absent or unreadable."""
    text = (value or "").strip().lower()
    if text in ("true", "1", "yes", "1.0"):
        return True
    if text in ("false", "0", "no", "0.0"):
        return False
    return None


def utm_zone(lat: float, lon: float) -> int:
    """Standard UTM zone number, with the Norway and Svalbard exceptions."""
    if 56 <= lat < 64 and 3 <= lon < 12:
        return 32
    if 72 <= lat < 84 and 0 <= lon < 42:
        return 31 if lon < 9 else 33 if lon < 21 else 35 if lon < 33 else 37
    return min(int((lon + 180) // 6) + 1, 60)


def _kruger_alphas() -> tuple[float, float, float, float]:
    n = _F / (2 - _F)
    # Radius of the rectifying sphere and Krueger's alpha series, to n^3 (sub-millimetre within a zone).
    big_a = _A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    return (
        big_a,
        n / 2 - 2 * n**2 / 3 + 5 * n**3 / 16,
        13 * n**2 / 48 - 3 * n**3 / 5,
        61 * n**3 / 240,
    )


_BIG_A, *_ALPHAS = _kruger_alphas()
_N = _F / (2 - _F)
_TWO_ROOT_N = 2 * math.sqrt(_N) / (1 + _N)


def latlon_to_utm(lat: float, lon: float, zone: int | None = None, south: bool | None = None) -> tuple[float, float]:
    """WGS84 degrees -> (easting, northing) in metres, transverse Mercator after Krueger/Karney.

    `zone` and `south` force one zone and hemisphere, so that points of one city that straddle
    a zone border or the equator stay in one continuous plane.
    """
    if not in_utm_range(lat, lon):
        raise ValueError(f"lat/lon out of the UTM range: {lat}, {lon}")
    zone = utm_zone(lat, lon) if zone is None else zone
    south = lat < 0 if south is None else south
    phi = math.radians(lat)
    dlam = math.radians(lon - ((zone - 1) * 6 - 180 + 3))
    t = math.sinh(math.atanh(math.sin(phi)) - _TWO_ROOT_N * math.atanh(_TWO_ROOT_N * math.sin(phi)))
    xi = math.atan2(t, math.cos(dlam))
    eta = math.atanh(math.sin(dlam) / math.sqrt(1 + t * t))
    east = eta + sum(a * math.cos(2 * j * xi) * math.sinh(2 * j * eta) for j, a in enumerate(_ALPHAS, 1))
    north = xi + sum(a * math.sin(2 * j * xi) * math.cosh(2 * j * eta) for j, a in enumerate(_ALPHAS, 1))
    return (
        _FALSE_EASTING + _K0 * _BIG_A * east,
        (_FALSE_NORTHING_SOUTH if south else 0.0) + _K0 * _BIG_A * north,
    )


def in_utm_range(lat: float, lon: float) -> bool:
    return -80.0 <= lat <= 84.0 and -180.0 <= lon <= 180.0


def latlons_to_utm(latlons: list[tuple[float, float] | None]) -> list[tuple[float, float] | None]:
    """Project a group of nearby points (one city) into the single zone of their mean position.

    Distances inside a group stay true; groups in different zones are separate planes
    (ImageRecord has no zone field), which is harmless for cities hundreds of km apart.
    None, or a point outside the UTM range, comes back as None for the caller to skip.
    """
    usable = [p for p in latlons if p is not None and in_utm_range(*p)]
    if not usable:
        return [None] * len(latlons)
    mean_lat = sum(p[0] for p in usable) / len(usable)
    mean_lon = sum(p[1] for p in usable) / len(usable)
    zone, south = utm_zone(mean_lat, mean_lon), mean_lat < 0
    return [latlon_to_utm(*p, zone, south) if p is not None and in_utm_range(*p) else None for p in latlons]
