"""Shard building, manifest, verification and resumption, on real webdataset tars built through Ray Data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.build import BuildOptions, build_shards
from structvpr.datasets.shards.verify import verify_shards

from vg_tree import make_vg_tree

SIZE = (48, 32)


def build(root, out, **kw):
    opts = BuildOptions(image_size=SIZE, shard_images=kw.pop("shard_images", 8), progress=False, **kw)
    return build_shards("vg", root, out, opts)


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    root = make_vg_tree(tmp_path_factory.mktemp("vg"))
    out = tmp_path_factory.mktemp("shards") / "out"
    return root, out, build(root, out, images_per_place=3)


def all_keys(out: Path) -> list[str]:
    tars = sorted(str(p) for p in out.rglob("*.tar"))
    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False)
    return [s["__key__"] for s in ds]


def test_manifest_counts_match_the_dataset(built):
    _, out, manifest = built
    splits = manifest["splits"]
    assert splits["train"]["places"]["samples"] == 12  # one sample per place
    assert splits["train"]["places"]["images"] == 36  # 3 views each
    assert splits["val"]["database"]["images"] == 4 and splits["val"]["queries"]["images"] == 8
    assert manifest["totals"]["skipped"] == 0
    assert manifest["image_size"] == list(SIZE)
    assert manifest["segmentation"]["model_id"] == "gt"
    for entry in manifest["shards"]:
        assert len(entry["sha256"]) == 64 and entry["bytes"] == (out / entry["path"]).stat().st_size
    sizes = json.loads((out / "train" / "sizes.json").read_text())
    assert sum(sizes.values()) == 12


def test_plain_webdataset_reads_members_and_safe_keys(built):
    _, out, _ = built
    ds = wds.WebDataset(str(out / "val" / "queries-000000.tar"), shardshuffle=False).decode("pil")
    sample = next(iter(ds))
    assert "." not in sample["__key__"]
    assert sample["jpg"].size == SIZE
    meta = sample["json"]
    assert meta["role"] == "query" and meta["name"].startswith("@") and "utm_east" in meta
    train = next(iter(wds.WebDataset(str(out / "train" / "places-000000.tar"), shardshuffle=False)))
    assert {"0.jpg", "0.seg.png", "1.jpg", "2.seg.png", "json"} <= set(train)


def test_ray_data_reads_the_shards(built, ray_local):
    import ray

    _, out, _ = built
    ds = ray.data.read_webdataset(str(out / "val"), decoder=None, file_extensions=["tar"])
    rows = ds.take_all()
    assert len(rows) == 12
    assert {"jpg", "seg.png", "json"} <= set(rows[0])


def test_segmentation_is_stored_as_ids_same_size_as_rgb(built):
    from structvpr.datasets.shards.reader import eval_samples

    _, out, _ = built
    samples = list(eval_samples(out, "test", "queries"))
    assert len(samples) == 8
    for s in samples:
        assert s["seg"].shape == s["rgb"].shape[:2] == (SIZE[1], SIZE[0])
        assert s["seg"].max() <= 7


def test_verify_passes_then_names_a_truncated_or_altered_shard(built, tmp_path):
    import shutil

    _, out, _ = built
    assert verify_shards(out, progress=False).ok
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / "val" / "queries-000000.tar"
    victim.write_bytes(victim.read_bytes()[:-700])
    altered = copy / "train" / "places-000001.tar"
    data = bytearray(altered.read_bytes())
    data[1000] ^= 0xFF
    altered.write_bytes(bytes(data))
    report = verify_shards(copy, progress=False)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "val/queries-000000.tar" in text and "train/places-000001.tar" in text


def test_rebuild_into_same_folder_is_a_no_op_and_other_options_are_refused(built):
    root, out, manifest = built
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    again = build(root, out, images_per_place=3)
    assert again["totals"] == manifest["totals"]
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    with pytest.raises(DatasetError, match="different build"):
        build(root, out, images_per_place=2)


def test_bad_inputs_are_counted_skips_with_reasons(tmp_path, ray_local):
    root = make_vg_tree(tmp_path / "vg", places={"train": 4, "val": 3})
    q = root / "images" / "val" / "queries"
    victims = sorted(q.iterdir())
    victims[0].write_bytes(b"")  # zero-byte
    victims[1].write_bytes(victims[1].read_bytes()[:100])  # truncated
    victims[2].write_bytes(b"not an image at all")
    (q / "holiday_photo.jpg").write_bytes(victims[3].read_bytes())  # name that does not parse
    lab = root / "labels" / "val" / "queries" / (victims[3].stem + ".png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(lab)  # wrong size
    lab4 = root / "labels" / "val" / "queries" / (victims[4].stem + ".png")
    Image.fromarray(np.full((48, 64), 200, np.uint8)).save(lab4)  # unknown ids
    (root / "labels" / "val" / "database" / (sorted((root / "images/val/database").iterdir())[0].stem + ".png")).unlink()
    manifest = build(root, tmp_path / "out")
    kinds = manifest["skipped"]["by_kind"]
    assert kinds == {"unreadable_image": 3, "bad_name": 1, "label_size": 1, "label_ids": 1, "missing_label": 1}
    rows = [json.loads(l) for l in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(r["reason"] and r["path"] for r in rows)
    assert manifest["splits"]["val"]["queries"]["images"] == 6 - 5
    assert verify_shards(tmp_path / "out", progress=False).ok


def test_missing_split_and_empty_folder_are_clear_errors(tmp_path):
    root = make_vg_tree(tmp_path / "vg", places={"train": 2})
    with pytest.raises(DatasetError, match="split 'val' not found"):
        build(root, tmp_path / "o1", splits=("val",))
    empty = tmp_path / "empty"
    (empty / "images" / "train" / "database").mkdir(parents=True)
    (empty / "images" / "train" / "queries").mkdir(parents=True)
    with pytest.raises(DatasetError, match="database"):
        build(empty, tmp_path / "o2")


def test_killed_build_resumes_with_same_samples_none_twice(tmp_path, ray_local):
    root = make_vg_tree(tmp_path / "vg", places={"train": 40, "val": 10}, queries_per_place=2)
    reference = build(root, tmp_path / "reference", shard_images=6)
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "structvpr", "-q", "data", "shards", "--format", "vg", "--root", str(root),
           "--seg-model", "gt", "--out", str(out), "--size", f"{SIZE[0]}x{SIZE[1]}", "--shard-images", "6",
           "--workers", "1"]
    proc = subprocess.Popen(cmd, env=os.environ | {"RAY_ADDRESS": address}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.stats.json"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    total = reference["totals"]["shards"]
    assert 2 <= len(finished) < total, "the kill should land mid-build"
    assert not (out / "manifest.json").exists()
    resumed = build(root, out, shard_images=6)
    assert resumed["totals"] == reference["totals"]
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in reference["shards"]]
    keys = all_keys(out)
    assert len(keys) == len(set(keys)) == reference["totals"]["samples"]
    assert all(finished[p] == p.stat().st_mtime_ns for p in finished), "finished shards must not be rebuilt"
