"""Format readers on tiny trees built on the fly in each public dataset's real layout."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from structvpr.datasets.formats import get_format, read_split
from structvpr.datasets.formats._common import latlon_to_utm, latlons_to_utm, utm_zone
from structvpr.datasets.formats.pitts import load_db_struct
from structvpr.datasets.records import DatasetError
from structvpr.datasets.vg_names import VGName, format_vg_name


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (90, 120, 150)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------- lat/lon -> UTM

# Known values from Turbo87/utm test/test_utm.py (rounded to 1 m) and its README (exact).
KNOWN_UTM = [
    ((50.77535, 6.08389), (294409, 5628898, 32)),  # Aachen
    ((40.71435, -74.00597), (583960, 4507523, 18)),  # New York
    ((-41.28646, 174.77624), (313784, 5427057, 60)),  # Wellington
    ((-33.92487, 18.42406), (261878, 6243186, 34)),  # Cape Town
    ((64.83778, -147.71639), (466013, 7190568, 6)),  # Fairbanks
    ((51.2, 7.5), (395201.3103811303, 5673135.241182375, 32)),
]


@pytest.mark.parametrize("latlon, expected", KNOWN_UTM)
def test_latlon_to_utm_matches_known_values_to_1m(latlon, expected):
    east, north = latlon_to_utm(*latlon)
    assert utm_zone(*latlon) == expected[2]
    assert abs(east - expected[0]) < 1.0 and abs(north - expected[1]) < 1.0


def test_utm_zone_exceptions_and_group_projection():
    assert utm_zone(60.0, 5.0) == 32  # Norway
    assert utm_zone(78.0, 15.0) == 33  # Svalbard
    # Points on both sides of the 6E zone border land in one plane: their ~1004 m gap survives
    # (0.014 deg of longitude at 50N on the ellipsoid), where separate zones would put them ~400 km apart.
    west, east = (50.0, 5.9930), (50.0, 6.0070)
    (e1, n1), (e2, n2), bad = latlons_to_utm([west, east, (95.0, 0.0)])
    assert 1002.0 < np.hypot(e2 - e1, n2 - n1) < 1005.0
    assert abs(latlon_to_utm(*east)[0] - latlon_to_utm(*west)[0]) > 100_000
    assert bad is None


# ---------------------------------------------------------------- vg


def vg_name(east: float, north: float, pano: str = "", heading: str = "", note: str = "") -> str:
    return format_vg_name(VGName(east, north, "17", "T", pano_id=pano, heading=heading, note=note))


def build_vg(root: Path, split: str = "train") -> dict[str, Path]:
    base = root / "images" / split
    files = {
        "db_night": write_image(base / "database" / vg_name(584000.5, 4477000.25, "panoA", "90", "night")),
        "db_plain": write_image(base / "database" / vg_name(584010.0, 4477010.0)),
        "q": write_image(base / "queries" / vg_name(584001.0, 4477001.0, heading="270", note="day")),
        "bad": write_image(base / "queries" / "IMG_0001.jpg"),
    }
    (base / "queries" / "notes.txt").write_text("not an image")
    return files


def test_vg_reads_records_conditions_places_and_bad_names(tmp_path):
    files = build_vg(tmp_path)
    listing = read_split("vg", tmp_path, "train")
    by_name = {r.name: r for r in listing.records}
    assert len(listing.records) == 3
    night = by_name[files["db_night"].name]
    assert (night.role, night.split, night.source) == ("database", "train", "vg")
    assert (night.utm_east, night.utm_north) == (584000.5, 4477000.25)
    assert (night.place_id, night.condition, night.heading) == (None, "night", 90.0)
    assert night.path == str(files["db_night"]) and night.label_path is None
    plain = by_name[files["db_plain"].name]
    assert (plain.place_id, plain.condition, plain.heading) == (None, "", None)
    assert by_name[files["q"].name].role == "query"
    [skip] = listing.skipped
    assert skip.path == str(files["bad"]) and skip.kind == "bad_name"
    assert "not a VG '@' name" in skip.reason and "@UTM_east@" in skip.reason


def test_vg_label_paths_when_the_labels_tree_exists(tmp_path):
    files = build_vg(tmp_path)
    label = write_image(tmp_path / "labels" / "train" / "database" / (files["db_night"].stem + ".png"))
    records = {r.name: r for r in get_format("vg").read(tmp_path, "train").records}
    assert records[files["db_night"].name].label_path == str(label)
    assert records[files["db_plain"].name].label_path is None  # hole in the tree: left to the shard builder


def test_vg_splits_and_missing_split(tmp_path):
    build_vg(tmp_path, "train")
    build_vg(tmp_path, "test")
    assert get_format("vg").splits(tmp_path) == ["train", "test"]
    with pytest.raises(DatasetError, match=r"split 'val' not found .*splits present: \['train', 'test'\]"):
        read_split("vg", tmp_path, "val")


def test_vg_missing_queries_folder_names_it(tmp_path):
    write_image(tmp_path / "images" / "val" / "database" / vg_name(1.0, 2.0))
    with pytest.raises(DatasetError) as err:
        read_split("vg", tmp_path, "val")
    assert str(tmp_path / "images" / "val" / "queries") in str(err.value)
    assert "ROOT/images/{train,val,test}/{database,queries}" in str(err.value)


def test_vg_empty_database_folder_names_it(tmp_path):
    (tmp_path / "images" / "val" / "database").mkdir(parents=True)
    write_image(tmp_path / "images" / "val" / "queries" / vg_name(1.0, 2.0))
    with pytest.raises(DatasetError, match="holds no images") as err:
        read_split("vg", tmp_path, "val")
    assert str(tmp_path / "images" / "val" / "database") in str(err.value)


def test_read_split_missing_root_and_unknown_format(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_split("vg", tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="unknown dataset format 'tokyo'"):
        get_format("tokyo")


# ---------------------------------------------------------------- msls

POST_HEADER = ["", "key", "easting", "northing", "unique_cluster", "control_panel", "night", "view_direction"]
RAW_HEADER = ["", "key", "lon", "lat", "ca", "captured_at", "pano"]


def build_msls_folder(folder: Path, rows: list[dict], post: bool = True, raw: bool = True) -> None:
    """rows: key, easting, northing, lat, lon, night, pano, image (write the file or not)."""
    if post:
        write_csv(folder / "postprocessed.csv", POST_HEADER, [
            [i, r["key"], r["easting"], r["northing"], 0, False, r["night"], "Forward"] for i, r in enumerate(rows)
        ])
    if raw:
        write_csv(folder / "raw.csv", RAW_HEADER, [
            [i, r["key"], r["lon"], r["lat"], 123.5, "2016-01-01", r["pano"]] for i, r in enumerate(rows)
        ])
    for r in rows:
        if r["image"]:
            write_image(folder / "images" / f"{r['key']}.jpg")
    (folder / "images").mkdir(parents=True, exist_ok=True)


def msls_row(key: str, easting: float = 699000.0, night: bool = False, pano: bool = False, image: bool = True):
    return dict(key=key, easting=easting, northing=5710000.0, lat=51.5, lon=-0.1, night=night, pano=pano, image=image)


def build_msls(root: Path) -> None:
    london = root / "train_val" / "london"
    build_msls_folder(london / "database", [
        msls_row("dbDay"), msls_row("dbNight", 699010.0, night=True), msls_row("dbPano", pano=True),
        msls_row("dbGone", image=False),
    ])
    build_msls_folder(london / "query", [msls_row("qNight", night=True)])
    cph = root / "train_val" / "cph"
    build_msls_folder(cph / "database", [msls_row("cphDb", 725000.0)])
    build_msls_folder(cph / "query", [msls_row("cphQ", 725001.0)])


def test_msls_train_split_records_conditions_and_skips(tmp_path):
    build_msls(tmp_path)
    reader = get_format("msls")
    assert reader.splits(tmp_path) == ["train", "val"]
    listing = read_split("msls", tmp_path, "train")
    by_key = {r.name: r for r in listing.records}
    assert sorted(by_key) == ["dbDay.jpg", "dbNight.jpg", "qNight.jpg"]
    day, night, query = by_key["dbDay.jpg"], by_key["dbNight.jpg"], by_key["qNight.jpg"]
    assert (day.role, day.condition, day.utm_east, day.utm_north) == ("database", "day", 699000.0, 5710000.0)
    assert (night.condition, night.utm_east, night.heading) == ("night", 699010.0, 123.5)
    assert (query.role, query.split, query.source, query.place_id) == ("query", "train", "msls", None)
    assert query.path == str(tmp_path / "train_val" / "london" / "query" / "images" / "qNight.jpg")
    skips = {Path(s.path).name: s for s in listing.skipped}
    assert (skips["dbPano.jpg"].kind, skips["dbGone.jpg"].kind) == ("panorama", "missing_image")
    assert "panorama" in skips["dbPano.jpg"].reason and "image file missing" in skips["dbGone.jpg"].reason


def test_msls_val_is_cph_and_sf_only(tmp_path):
    build_msls(tmp_path)
    listing = read_split("msls", tmp_path, "val")
    assert sorted(r.name for r in listing.records) == ["cphDb.jpg", "cphQ.jpg"]
    assert {r.split for r in listing.records} == {"val"}


def test_msls_raw_only_converts_lat_lon_to_utm(tmp_path):
    city = tmp_path / "train_val" / "aachen"
    row = dict(msls_row("k1"), lat=50.77535, lon=6.08389)
    build_msls_folder(city / "database", [row], post=False)
    build_msls_folder(city / "query", [row], post=False)
    [db, q] = read_split("msls", tmp_path, "train").records
    assert abs(db.utm_east - 294409) < 1.0 and abs(db.utm_north - 5628898) < 1.0
    assert db.condition == ""  # no night flag without postprocessed.csv
    assert (q.utm_east, q.utm_north) == (db.utm_east, db.utm_north)


def test_msls_test_city_without_coordinates_fails_clearly(tmp_path):
    build_msls(tmp_path)
    for folder in ("database", "query"):
        write_csv(tmp_path / "test" / "miami" / folder / "seq_info.csv", ["", "key", "sequence_key", "frame_number"],
                  [[0, "k", "s", 1]])
    assert get_format("msls").splits(tmp_path) == ["train", "val", "test"]
    with pytest.raises(DatasetError, match="neither postprocessed.csv nor raw.csv") as err:
        read_split("msls", tmp_path, "test")
    assert str(tmp_path / "test" / "miami" / "database") in str(err.value)


def test_msls_missing_query_folder_names_it(tmp_path):
    build_msls_folder(tmp_path / "train_val" / "sf" / "database", [msls_row("a")])
    with pytest.raises(DatasetError) as err:
        read_split("msls", tmp_path, "val")
    assert str(tmp_path / "train_val" / "sf" / "query") in str(err.value)


# ---------------------------------------------------------------- gsv

GSV_HEADER = ["place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid"]


def gsv_image(root: Path, row: list, lat_text: str | None = None) -> Path:
    place, year, month, north, city, lat, lon, pano = row
    lat_text = lat_text or str(float(lat))
    name = f"{city}_{place:07d}_{year:04d}_{month:02d}_{north:03d}_{lat_text}_{str(float(lon))}_{pano}.jpg"
    return write_image(root / "Images" / city / name)


def build_gsv(root: Path) -> dict[str, Path]:
    london = [
        [0, 2016, 7, 90, "London", "51.50735", "-0.12776", "abc_DEF-1"],  # panoid with '_'
        [0, 2019, 3, 270, "London", "51.50740", "-0.12770", "pano2"],
        [1, 2018, 5, 0, "London", "51.60000", "-0.20000", "pano3"],  # image missing
    ]
    boston = [[0, 2017, 10, 45, "Boston", "42.36010", "-71.05890", "bpano"]]
    write_csv(root / "Dataframes" / "London.csv", GSV_HEADER, london)
    write_csv(root / "Dataframes" / "Boston.csv", GSV_HEADER, boston)
    return {
        # pandas prints 51.50740 as 51.5074: match names on every field but lat/lon.
        "l0": gsv_image(root, london[0]),
        "l1": gsv_image(root, london[1], lat_text="51.5074"),
        "b0": gsv_image(root, boston[0]),
    }


def test_gsv_train_records_places_unique_across_cities(tmp_path):
    files = build_gsv(tmp_path)
    assert get_format("gsv").splits(tmp_path) == ["train"]
    listing = read_split("gsv", tmp_path, "train")
    by_path = {r.path: r for r in listing.records}
    assert set(by_path) == {str(p) for p in files.values()}
    l0, l1, b0 = (by_path[str(files[k])] for k in ("l0", "l1", "b0"))
    assert {r.role for r in listing.records} == {"database"} and {r.split for r in listing.records} == {"train"}
    assert (l0.place_id, l1.place_id, b0.place_id) == ("London_0", "London_0", "Boston_0")
    assert (l0.heading, b0.heading, l0.condition, l0.source) == (90.0, 45.0, "", "gsv")
    east, north = latlon_to_utm(51.50735, -0.12776)
    assert abs(l0.utm_east - east) < 1.0 and abs(l0.utm_north - north) < 1.0
    assert np.hypot(l1.utm_east - l0.utm_east, l1.utm_north - l0.utm_north) < 10.0
    [skip] = listing.skipped
    assert "London_0000001_2018_05_000_" in skip.path and skip.kind == "missing_image"


def test_gsv_has_no_val_split_and_checks_columns_and_city_folders(tmp_path):
    build_gsv(tmp_path)
    with pytest.raises(DatasetError, match="split 'val' not found"):
        read_split("gsv", tmp_path, "val")
    write_csv(tmp_path / "Dataframes" / "Paris.csv", ["place_id", "lat", "lon"], [[0, 48.8, 2.3]])
    with pytest.raises(DatasetError, match=r"Paris.csv lacks column\(s\) \['year'"):
        read_split("gsv", tmp_path, "train")
    write_csv(tmp_path / "Dataframes" / "Paris.csv", GSV_HEADER, [[0, 2016, 1, 0, "Paris", 48.8, 2.3, "p"]])
    with pytest.raises(DatasetError) as err:
        read_split("gsv", tmp_path, "train")
    assert str(tmp_path / "Images" / "Paris") in str(err.value)


# ---------------------------------------------------------------- pitts


def cell(strings: list[str]) -> np.ndarray:
    # A MATLAB cell column (N x 1), as NetVLAD's dbStruct stores image lists.
    out = np.empty((len(strings), 1), dtype=object)
    out[:, 0] = strings
    return out


def write_db_struct(path: Path, db: list[str], utm_db: list, q: list[str], utm_q: list, which: str = "val") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {
        "whichSet": which, "dbImageFns": cell(db), "utmDb": np.array(utm_db, dtype=float).T,
        "qImageFns": cell(q), "utmQ": np.array(utm_q, dtype=float).T, "numImages": len(db),
        "numQueries": len(q), "posDistThr": 25, "posDistSqThr": 625, "nonTrivPosDistSqThr": 100,
    }
    scipy.io.savemat(path, {"dbStruct": struct})


DB = ["000/000000_pitch1_yaw1.jpg", "000/000000_pitch1_yaw2.jpg", "001/001000_pitch2_yaw1.jpg"]
UTM_DB = [[585000.0, 4477000.0], [585000.0, 4477000.0], [586000.5, 4478000.25]]
Q = ["000/000007_pitch1_yaw3.jpg"]
UTM_Q = [[585003.0, 4477004.0]]


def build_pitts(root: Path) -> None:
    write_db_struct(root / "datasets" / "pitts30k_val.mat", DB, UTM_DB, Q, UTM_Q)
    for rel in DB[:2]:  # the third database image is missing
        write_image(root / rel)
    write_image(root / "queries_real" / Q[0])


def test_pitts_reads_struct_and_joins_image_roots(tmp_path):
    build_pitts(tmp_path)
    assert get_format("pitts").splits(tmp_path) == ["val"]
    listing = read_split("pitts", tmp_path, "val")
    db = [r for r in listing.records if r.role == "database"]
    [q] = [r for r in listing.records if r.role == "query"]
    assert [r.path for r in db] == [str(tmp_path / rel) for rel in DB[:2]]
    assert (db[0].name, db[0].source) == ("000000_pitch1_yaw1.jpg", "pitts")
    assert (db[0].utm_east, db[0].utm_north) == (585000.0, 4477000.0)
    assert (q.path, q.split) == (str(tmp_path / "queries_real" / Q[0]), "val")
    assert (q.utm_east, q.utm_north) == (585003.0, 4477004.0)
    [skip] = listing.skipped
    assert skip.path.endswith(DB[2]) and skip.kind == "missing_image" and "queries" not in skip.reason


@pytest.mark.parametrize("options", [{}, {"squeeze_me": True}, {"struct_as_record": False},
                                     {"squeeze_me": True, "struct_as_record": False}])
def test_load_db_struct_same_under_any_loadmat_style(tmp_path, options):
    build_pitts(tmp_path)
    struct = load_db_struct(tmp_path / "datasets" / "pitts30k_val.mat", **options)
    assert struct.names == {"database": DB, "query": Q}
    np.testing.assert_array_equal(struct.utm["database"], UTM_DB)
    np.testing.assert_array_equal(struct.utm["query"], UTM_Q)


def test_pitts_netvlad_matlab_layout_and_250k_preference(tmp_path):
    # Relja's MATLAB layout: structs in ROOT, images/ and queries/; one query squeezes to a scalar.
    write_db_struct(tmp_path / "pitts30k_test.mat", DB[:1], UTM_DB[:1], Q, UTM_Q, "test")
    write_db_struct(tmp_path / "pitts250k_test.mat", DB, UTM_DB, Q, UTM_Q, "test")
    for rel in DB:
        write_image(tmp_path / "images" / rel)
    write_image(tmp_path / "queries" / Q[0])
    small = read_split("pitts", tmp_path, "test")
    large = read_split("pitts250k", tmp_path, "test")
    assert (len(small.records), len(large.records)) == (2, 4)
    assert small.records[0].path == str(tmp_path / "images" / DB[0]) and not small.skipped
    assert {r.source for r in large.records} == {"pitts250k"}


def test_pitts_bad_struct_files_fail_clearly(tmp_path):
    path = tmp_path / "datasets" / "pitts30k_train.mat"
    path.parent.mkdir()
    path.write_text("not a mat file")
    with pytest.raises(DatasetError, match="cannot read .*pitts30k_train.mat"):
        read_split("pitts", tmp_path, "train")
    scipy.io.savemat(path, {"dbStruct": {"whichSet": "train", "utmDb": np.zeros((2, 1))}})
    with pytest.raises(DatasetError, match="lacks field dbImageFns or dbImage"):
        read_split("pitts", tmp_path, "train")
    write_db_struct(path, DB, UTM_DB[:2], Q, UTM_Q)
    with pytest.raises(DatasetError, match="3 database images but 2 UTM positions"):
        read_split("pitts", tmp_path, "train")
