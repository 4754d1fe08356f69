"""The synthetic city: layout, names, labels, split separation, determinism, and that structure matters."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from structvpr.datasets.class_maps import CATEGORIES
from structvpr.datasets.records import DatasetError
from structvpr.datasets.synth import PRESETS, generate_city
from structvpr.datasets.synth import generate as synth_generate
from structvpr.datasets.synth.camera import traversals
from structvpr.datasets.synth.render import CONSTRUCTION, FLAT, HUMAN, NATURE, OBJECT, SKY, VEHICLE, VOID
from structvpr.datasets.synth.structure_check import structure_recall
from structvpr.datasets.vg_names import parse_vg_name

SPLITS = ("train", "val", "test")
ROLE_DIRS = {"database": "database", "query": "queries"}


@pytest.fixture(scope="session")
def tiny_cities(tiny_city, tmp_path_factory):
    """tiny_cities(seed) -> (root, summary), each seed rendered once; seed 0 is conftest's tiny_city."""
    made = {0: tiny_city}

    def make(seed: int):
        if seed not in made:
            made[seed] = tmp_path_factory.mktemp(f"synth_tiny_{seed}")
            generate_city(made[seed], "tiny", seed=seed, workers=2, progress=False)
        root = Path(made[seed])
        return root, json.loads((root / "synth.json").read_text())["summary"]

    return make


def _images(root: Path, split: str, role: str) -> list[Path]:
    return sorted((root / "images" / split / ROLE_DIRS[role]).glob("*.jpg"))


def _places(root: Path, split: str, role: str) -> np.ndarray:
    return np.array([[n.utm_east, n.utm_north] for n in map(lambda p: parse_vg_name(p.name), _images(root, split, role))])


def test_layout_counts_and_names(tiny_cities):
    root, summary = tiny_cities(0)
    total = 0
    for split in SPLITS:
        for role in ROLE_DIRS:
            paths = _images(root, split, role)
            assert paths, f"{split}/{role} is empty"
            assert len(paths) == summary["images"][split][role]
            total += len(paths)
            for p in paths:
                name = parse_vg_name(p.name)
                assert (name.utm_zone, name.utm_letter) == ("17", "T")
                assert re.fullmatch(r"p\d{6}", name.pano_id)
                assert 0.0 <= float(name.heading) < 360.0
                assert 40.0 < float(name.lat) < 41.0 and -81.0 < float(name.lon) < -79.0
                assert name.note == "day" if role == "database" else name.note in summary["conditions"][1:]
                assert (root / "labels" / split / ROLE_DIRS[role] / (p.stem + ".png")).is_file()
    assert 150 <= total <= 300
    assert json.loads((root / "labels" / "classes.json").read_text()) == {str(k): v for k, v in CATEGORIES.items()}
    meta = json.loads((root / "synth.json").read_text())
    assert (meta["preset"], meta["seed"], meta["complete"]) == ("tiny", 0, True)
    assert meta["summary"]["images"] == summary["images"]
    assert not list(root.rglob("*.tmp")), "temporary files left behind"


def test_place_ids_unique_and_every_query_place_in_its_database(tiny_cities):
    root, _ = tiny_cities(0)
    seen = {}
    for split in SPLITS:
        db_ids = [parse_vg_name(p.name).pano_id for p in _images(root, split, "database")]
        assert len(db_ids) == len(set(db_ids))
        for pid in db_ids:
            assert seen.setdefault(pid, split) == split, f"place {pid} in two splits"
        for p in _images(root, split, "query"):
            assert parse_vg_name(p.name).pano_id in db_ids


def test_label_ids_render_constants_match_categories():
    ids = {VOID: "void", FLAT: "flat", CONSTRUCTION: "construction", OBJECT: "object", NATURE: "nature",
           SKY: "sky", HUMAN: "human", VEHICLE: "vehicle"}
    assert ids == CATEGORIES


def test_labels_match_images(tiny_cities):
    root, _ = tiny_cities(0)
    present = set()
    for p in sorted((root / "images").rglob("*.jpg"))[::7]:
        img = Image.open(p)
        label = Image.open(root / "labels" / p.relative_to(root / "images").with_suffix(".png"))
        assert label.mode == "L" and label.size == img.size == (160, 120)
        ids = np.unique(np.asarray(label))
        assert ids.min() >= 0 and ids.max() <= 7
        present |= set(ids.tolist())
    assert {FLAT, CONSTRUCTION, SKY, NATURE, VEHICLE} <= present


def test_splits_are_separated_areas(tiny_cities):
    root, _ = tiny_cities(0)
    train = _places(root, "train", "database")
    for other in ("val", "test"):
        xy = _places(root, other, "database")
        gap = np.linalg.norm(xy[:, None, :] - train[None, :, :], axis=2).min()
        assert gap >= 100.0, f"a {other} place lies {gap:.0f} m from a train place"


def test_queries_never_sit_on_database_positions(tiny_cities):
    root, _ = tiny_cities(0)
    for split in SPLITS:
        db = {parse_vg_name(p.name).pano_id: parse_vg_name(p.name) for p in _images(root, split, "database")}
        for p in _images(root, split, "query"):
            q = parse_vg_name(p.name)
            ref = db[q.pano_id]
            moved = np.hypot(q.utm_east - ref.utm_east, q.utm_north - ref.utm_north)
            turned = abs((float(q.heading) - float(ref.heading) + 180) % 360 - 180)
            assert 0.5 < moved < 5.0 and turned <= 6.5, p.name


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for kind in ("images", "labels") for p in sorted((root / kind).rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tiny_cities, tmp_path):
    root, summary = tiny_cities(0)  # rendered by one worker
    again = generate_city(tmp_path / "again", "tiny", seed=0, workers=2, progress=False)
    assert again["images"] == summary["images"]
    assert _digests(tmp_path / "again") == _digests(root)


def test_other_seed_other_city(tiny_cities):
    names0 = {p.name for p in (tiny_cities(0)[0] / "images").rglob("*.jpg")}
    names1 = {p.name for p in (tiny_cities(1)[0] / "images").rglob("*.jpg")}
    assert names0.isdisjoint(names1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_maps_find_places_better_than_rgb(tiny_cities, seed):
    root, _ = tiny_cities(seed)
    result = structure_recall(root, splits=SPLITS)
    rgb, label = result["rgb"]["overall"]["R@1"], result["label"]["overall"]["R@1"]
    assert result["no_positive"] == 0
    assert label >= 60.0, result
    assert label >= 1.3 * rgb, result


def test_image_size_override_renders_at_that_size(tmp_path):
    cfg = replace(PRESETS["tiny"], image_size=(64, 48))
    synth_generate._init(cfg, 0, str(tmp_path))
    shot = next(s for s in traversals(synth_generate._STATE["city"], cfg, 0) if s.condition == "night")
    rgb, label = synth_generate.render_shot(shot)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert label.shape == (48, 64) and label.dtype == np.uint8


def test_rerun_replaces_a_previous_city_and_refuses_foreign_folders(tmp_path):
    previous = tmp_path / "previous"
    (previous / "images" / "test" / "queries").mkdir(parents=True)
    (previous / "images" / "test" / "queries" / "stale.jpg").write_bytes(b"x")
    (previous / "synth.json").write_text('{"preset": "tiny", "seed": 0, "settings": {}, "complete": false}')
    synth_generate._prepare(previous)
    assert not (previous / "images" / "test" / "queries" / "stale.jpg").exists()
    assert (previous / "labels" / "val" / "database").is_dir()
    foreign = tmp_path / "foreign"
    (foreign / "images").mkdir(parents=True)
    (foreign / "synth.json").write_text("{}")  # a synth.json that no synth run wrote does not make it ours
    with pytest.raises(DatasetError, match="no synth run wrote"):
        generate_city(foreign, "tiny", workers=1, progress=False)
    assert (foreign / "images").is_dir()
    with pytest.raises(ValueError, match="unknown synth preset"):
        generate_city(tmp_path / "x", "huge", workers=1, progress=False)
