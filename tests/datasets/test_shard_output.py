"""Where `data shards` writes: never into what it reads, and `--overwrite` removes only what a build wrote.

Each case runs `structvpr data shards` in-process; shards are written without Ray (same ShardWriter).
"""

from __future__ import annotations

import json

import pytest

from structvpr.cli import main

from vg_tree import assert_refused, make_vg_tree, shards_without_ray, tree_files


@pytest.fixture(autouse=True)
def no_ray():
    with shards_without_ray():
        yield


@pytest.fixture
def city(tmp_path):
    return make_vg_tree(tmp_path.resolve() / "city", places={"train": 3, "val": 2}, queries_per_place=1, size=(32, 24))


def shards(root, out, *extra, seg_model="gt"):
    return ["-q", "data", "shards", "--format", "vg", "--root", str(root), "--seg-model", str(seg_model),
            "--out", str(out), "--size", "32x24", "--workers", "1", *extra]


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_overwrite_into_the_dataset_root_is_refused_and_the_dataset_is_intact(city, capsys):
    before = tree_files(city)
    code, err = run(shards(city, city, "--overwrite"), capsys)
    assert_refused(code, err, [city, "is the dataset root"])
    assert tree_files(city) == before and len(before) > 20


@pytest.mark.parametrize("where", ["inside", "parent", "symlink", "symlink_inside"])
def test_out_inside_containing_or_linked_to_the_root_is_refused(city, tmp_path, capsys, where):
    outs = {"inside": city / "shards", "parent": tmp_path.resolve(), "symlink": tmp_path / "link",
            "symlink_inside": tmp_path / "link_images"}
    (tmp_path / "link").symlink_to(city, target_is_directory=True)
    (tmp_path / "link_images").symlink_to(city / "images", target_is_directory=True)
    before = tree_files(tmp_path)
    code, err = run(shards(city, outs[where], "--overwrite"), capsys)
    assert_refused(code, err, [city])
    assert tree_files(tmp_path) == before


@pytest.mark.parametrize("where", ["is", "contains"])
def test_out_that_is_or_holds_the_segmentation_checkpoint_is_refused(city, tmp_path, capsys, where):
    ckpt = tmp_path.resolve() / "models" / "seg.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights of a week of training")
    before = tree_files(tmp_path)
    code, err = run(shards(city, ckpt if where == "is" else ckpt.parent, "--overwrite", seg_model=ckpt), capsys)
    assert_refused(code, err, [ckpt, f"{where} the segmentation model"])
    assert tree_files(tmp_path) == before


def test_overwrite_keeps_a_users_files_and_rebuilds(city, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(shards(city, out, "--shard-images", "2"), capsys)[0] == 0
    first = set(tree_files(out))
    assert "train/places-000001.tar" in first and "train/places-000001.tar.stats.json" in first
    mine = {"notes.txt": "mine", "train/keep.txt": "mine too", "val/.draft.1.tmp": "a user's temp file",
            "train/places-000001.tar.bak": "a user's copy"}
    for name, text in mine.items():
        (out / name).write_text(text)
    (out / "train" / ".places-000000.tar.4242.tmp").write_bytes(b"half a shard of a killed build")
    code, err = run(shards(city, out, "--shard-images", "100", "--overwrite"), capsys)
    assert code == 0, err
    for name, text in mine.items():
        assert (out / name).read_text() == text, f"--overwrite removed the user's {name}"
    now = set(tree_files(out))
    assert "train/places-000001.tar" not in now and "train/.places-000000.tar.4242.tmp" not in now
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shard_images"] == 100 and manifest["totals"]["shards"] == len([n for n in now if n.endswith(".tar")])


def test_overwrite_removes_split_folders_it_emptied_and_nothing_else(city, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(shards(city, out), capsys)[0] == 0
    code, err = run(shards(city, out, "--splits", "train", "--overwrite"), capsys)
    assert code == 0, err
    assert not (out / "val").exists() and (out / "train").is_dir()


def test_overwrite_of_a_folder_that_is_not_a_build_is_refused(city, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    (out / "plan.json").write_text("my own plan, not JSON")
    before = tree_files(tmp_path)
    code, err = run(shards(city, out, "--overwrite"), capsys)
    assert_refused(code, err, [out, "--overwrite removes only what a build wrote"])
    assert tree_files(tmp_path) == before


def test_resume_removes_only_the_temporaries_a_build_writes(city, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(shards(city, out), capsys)[0] == 0
    (out / ".notes.tmp").write_text("a user's file that merely looks temporary")
    (out / "train" / ".places-000009.tar.77.tmp").write_bytes(b"half a shard")
    assert run(shards(city, out), capsys)[0] == 0
    assert (out / ".notes.tmp").is_file() and not (out / "train" / ".places-000009.tar.77.tmp").exists()


def test_out_under_a_file_is_refused(city, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    code, err = run(shards(city, tmp_path / "notes.txt" / "shards"), capsys)
    assert_refused(code, err, [tmp_path / "notes.txt", "is a file"])
