"""Reader of Mapillary SLS: ROOT/{train_val,test}/<city>/{database,query}/ with CSVs and images/<key>.jpg.

Confirmed against mapillary/mapillary_sls: README.md ("Package structure") gives the tree and the
meta files (raw.csv: key, lon, lat, ca, captured_at, pano; postprocessed.csv: key, utm as easting
and northing, night, control_panel, view_direction, unique_cluster; test cities ship only
seq_info.csv and subtask_index.csv), and mapillary_sls/datasets/msls.py gives `default_cities`
(val: cph, sf), reads `easting`/`northing`, `night`, `view_direction == 'Sideways'`, excludes
rows with raw.csv `pano == True`, and finds images at <city>/<folder>/images/<key>.jpg. The
headers, as public code asserts them: ",key,easting,northing,unique_cluster,control_panel,night,
view_direction" and ",key,lon,lat,ca,captured_at,pano" (booleans written as True/False).
gmberton/VPR-datasets-downloader format_mapillary.py drops panoramas and reads night the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from structvpr.datasets.formats.registry import register
from structvpr.datasets.formats._common import (
    absolute,
    collect,
    finite_utm,
    latlons_to_utm,
    parse_flag,
    read_csv,
    require_folder,
)
from structvpr.datasets.records import DatasetError, ImageRecord, Listing, Skip

VAL_CITIES = ("cph", "sf")
ROLE_FOLDERS = (("database", "database"), ("query", "query"))
LAYOUT = "ROOT/{train_val,test}/<city>/{database,query}/{postprocessed.csv and/or raw.csv, images/<key>.jpg}"


@dataclass
class _Table:
    """One city's database or query folder: its CSV rows by key, and UTM per key."""

    folder: Path
    post: dict[str, dict[str, str]] | None
    raw: dict[str, dict[str, str]] | None
    utm: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.post if self.post is not None else self.raw)

    def condition(self, key: str) -> str:
        night = parse_flag(self.post[key].get("night")) if self.post is not None else None
        return "" if night is None else "night" if night else "day"

    def heading(self, key: str) -> float | None:
        # raw.csv `ca` is the camera's compass angle in degrees.
        row = (self.raw or {}).get(key)
        return _float(row.get("ca")) if row else None

    def is_pano(self, key: str) -> bool:
        row = (self.raw or {}).get(key)
        return bool(row) and parse_flag(row.get("pano")) is True


class MSLSReader:
    name = "msls"

    def splits(self, root: Path) -> list[str]:
        return [s for s in ("train", "val", "test") if _split_cities(Path(root), s)]

    def read(self, root: Path, split: str) -> Listing:
        return collect(e for city in _split_cities(Path(root), split) for e in _read_city(city, split))


def _cities(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _split_cities(root: Path, split: str) -> list[Path]:
    if split == "test":
        return _cities(root / "test")
    # Val stays exactly MSLS's cph + sf so numbers compare with the literature; every other
    # train_val city (MSLS's 22 training cities, or a user's extra one) trains.
    return [c for c in _cities(root / "train_val") if (c.name in VAL_CITIES) == (split == "val")]


def _read_city(city: Path, split: str) -> Iterator[ImageRecord | Skip]:
    tables = [(_load_table(city / folder), role) for folder, role in ROLE_FOLDERS]
    _fill_utm([t for t, _ in tables])
    for table, role in tables:
        for key in table.keys:
            yield _entry(table, key, split, role)


def _load_table(folder: Path) -> _Table:
    require_folder(folder, LAYOUT)
    post = _rows_by_key(folder / "postprocessed.csv", ("key", "easting", "northing"))
    raw = _rows_by_key(folder / "raw.csv", ("key", "lon", "lat"))
    if post is None and raw is None:
        raise DatasetError(
            f"{folder} has neither postprocessed.csv nor raw.csv, so its images have no coordinates "
            f"(MSLS test cities ship without them; evaluate on val: {', '.join(VAL_CITIES)}); "
            f"expected layout: {LAYOUT}"
        )
    table = _Table(folder, post, raw)
    if not table.keys:
        raise DatasetError(f"the CSVs in {folder} list no images; expected layout: {LAYOUT}")
    return table


def _rows_by_key(path: Path, required: tuple[str, ...]) -> dict[str, dict[str, str]] | None:
    return {row["key"]: row for row in read_csv(path, required)} if path.is_file() else None


def _fill_utm(tables: list[_Table]) -> None:
    """UTM from postprocessed.csv where present; else raw.csv lat/lon, projected in one zone per city."""
    from_latlon = [(t, key) for t in tables if t.post is None for key in t.keys]
    for table in tables:
        if table.post is not None:
            table.utm = {key: _pair(table.post[key], "easting", "northing") for key in table.keys}
    latlons = [_pair(t.raw[key], "lat", "lon") for t, key in from_latlon]
    for (table, key), utm in zip(from_latlon, latlons_to_utm(latlons)):
        table.utm[key] = utm


def _entry(table: _Table, key: str, split: str, role: str) -> ImageRecord | Skip:
    path = table.folder / "images" / f"{key}.jpg"
    if table.is_pano(key):
        return Skip(absolute(path), "panorama (raw.csv pano=True); MSLS's own loader excludes panoramas", "panorama")
    if not path.is_file():
        return Skip(absolute(path), f"image file missing: listed in the CSVs of {table.folder}", "missing_image")
    utm = table.utm.get(key)
    if utm is None or not finite_utm(*utm):
        reason = "no usable coordinates (easting/northing or lat/lon) in its CSV row"
        return Skip(absolute(path), reason, "bad_coordinates")
    return ImageRecord(
        path=absolute(path),
        name=path.name,
        split=split,
        role=role,
        utm_east=utm[0],
        utm_north=utm[1],
        condition=table.condition(key),
        heading=table.heading(key),
        source="msls",
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _pair(row: dict[str, str], a: str, b: str) -> tuple[float, float] | None:
    x, y = _float(row.get(a)), _float(row.get(b))
    return None if x is None or y is None else (x, y)


register(MSLSReader())
