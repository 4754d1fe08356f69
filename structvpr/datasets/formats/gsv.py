"""Reader of GSV-Cities: ROOT/Dataframes/<City>.csv and ROOT/Images/<City>/<name>.jpg, a train-only place set.

Confirmed against amaralibey/gsv-cities, dataloaders/GSVCitiesDataset.py: it reads
`Dataframes/{city}.csv` (columns place_id, year, month, northdeg, city_id, lat, lon, panoid),
opens `Images/{row.city_id}/{name}` and builds the name in `get_img_name` as
city_id + '_' + place_id.zfill(7) + '_' + year.zfill(4) + '_' + month.zfill(2) + '_' +
northdeg.zfill(3) + '_' + str(lat) + '_' + str(lon) + '_' + panoid + '.jpg'.
Its place ids are per city (it offsets them by city), so ours are "<city_id>_<place_id>".
lat/lon are printed by pandas' float str(), so names are matched on every field but lat/lon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from structvpr.datasets.formats.registry import register
from structvpr.datasets.formats._common import absolute, collect, finite_utm, latlons_to_utm, read_csv
from structvpr.datasets.records import DatasetError, ImageRecord, Listing, Skip

COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
LAYOUT = (
    "ROOT/Dataframes/<City>.csv and ROOT/Images/<City>/"
    "<City>_<place_id:07d>_<year>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg"
)


class GSVReader:
    name = "gsv"

    def splits(self, root: Path) -> list[str]:
        # GSV-Cities is a training set only; evaluation uses other benchmarks.
        return ["train"] if (Path(root) / "Dataframes").is_dir() else []

    def read(self, root: Path, split: str) -> Listing:
        root = Path(root)
        frames = sorted((root / "Dataframes").glob("*.csv"))
        if not frames:
            raise DatasetError(f"folder {root / 'Dataframes'} holds no <City>.csv; expected layout: {LAYOUT}")
        return collect(entry for frame in frames for entry in _read_city(root, frame))


def _read_city(root: Path, frame: Path) -> Iterator[ImageRecord | Skip]:
    rows = read_csv(frame, COLUMNS)
    utms = latlons_to_utm([_latlon(row) for row in rows])
    files_by_city: dict[str, dict[tuple, Path]] = {}
    for row, utm in zip(rows, utms):
        city = row["city_id"]
        if city not in files_by_city:
            files_by_city[city] = _index_images(root / "Images" / city, city)
        yield _entry(row, files_by_city[city], utm, root)


def _latlon(row: dict[str, str]) -> tuple[float, float] | None:
    try:
        return float(row["lat"]), float(row["lon"])
    except ValueError:
        return None


def _row_key(row: dict[str, str]) -> tuple[str, ...]:
    fields = ("place_id", "year", "month", "northdeg")
    return (*(row[f].zfill(w) for f, w in zip(fields, (7, 4, 2, 3))), row["panoid"])


def _index_images(folder: Path, city: str) -> dict[tuple, Path]:
    """Image files of one city by (place_id, year, month, northdeg, panoid): one listing, no per-row stat."""
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} is missing; expected layout: {LAYOUT}")
    index = {}
    prefix = f"{city}_"
    for path in folder.iterdir():
        if path.name.startswith(prefix) and path.suffix.lower() == ".jpg":
            # panoids may hold '_', so split off the six fields before it and keep the rest whole.
            parts = path.stem[len(prefix):].split("_", 6)
            if len(parts) == 7:
                index[(*parts[:4], parts[6])] = path
    return index


def _expected_name(row: dict[str, str]) -> str:
    place, year, month, north, panoid = _row_key(row)
    return f"{row['city_id']}_{place}_{year}_{month}_{north}_{row['lat']}_{row['lon']}_{panoid}.jpg"


def _entry(row: dict, files: dict[tuple, Path], utm: tuple[float, float] | None, root: Path) -> ImageRecord | Skip:
    path = files.get(_row_key(row))
    if path is None:
        missing = absolute(root / "Images" / row["city_id"] / _expected_name(row))
        return Skip(missing, "image file missing: listed in Dataframes but not under Images/", "missing_image")
    if utm is None or not finite_utm(*utm):
        reason = f"no usable lat/lon in its Dataframes row: {row['lat']!r}, {row['lon']!r}"
        return Skip(absolute(path), reason, "bad_coordinates")
    try:
        place, heading = int(row["place_id"]), float(row["northdeg"])
    except ValueError:
        reason = f"non-numeric place_id/northdeg in its Dataframes row: {row['place_id']!r}, {row['northdeg']!r}"
        return Skip(absolute(path), reason, "bad_row")
    return ImageRecord(
        path=absolute(path),
        name=path.name,
        split="train",
        role="database",
        utm_east=utm[0],
        utm_north=utm[1],
        place_id=f"{row['city_id']}_{place}",
        heading=heading,
        source="gsv",
    )


register(GSVReader())
