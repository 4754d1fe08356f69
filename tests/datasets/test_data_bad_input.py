"""The bad-input matrix of the data commands: `data synth`, `seg train`, `data shards`, `data verify`.

Every argument that names a path, a number or a reference gets a bad value, and the files the commands
read (checkpoints, manifests, shards, dataset folders) come broken. Each case runs `structvpr ...`
in-process and checks what a user sees: exit status 2 and one last line `structvpr: error: ...` (or
argparse's `structvpr <sub>: error: ...`) naming the bad value, no traceback, and nothing written or
deleted. Verify's findings about shard contents are FAIL lines and exit status 1. No case starts Ray.

(Named test_data_bad_input.py: tests/platform/test_bad_input.py already takes the module name
`test_bad_input`, and two test modules of one name cannot be collected in one pytest run.)
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from structvpr.cli import main
from structvpr.datasets.segmentation.checkpoint import FORMAT
from structvpr.datasets.shards.manifest import sha256_file

from vg_tree import assert_refused, make_vg_tree, shards_without_ray, tree_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests/conftest.py sets it too: hub ids must fail at once


@pytest.fixture(autouse=True)
def no_ray():
    with shards_without_ray():
        yield


class Evil:
    """A pickled payload: loading it without weights_only would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "x"))


def fake_checkpoint(**fields) -> dict:
    return {"format": FORMAT, "arch": "FPN", "encoder": "resnet18", "num_classes": 8, "class_map": "categories",
            "image_size": [32, 32], "state_dict": {"weight": torch.zeros(2)}, **fields}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small labelled VG dataset and a good shard folder built from it (copied into each case's folder)."""
    base = tmp_path_factory.mktemp("template")
    city = make_vg_tree(base / "city", places={"train": 3, "val": 3}, queries_per_place=1, size=(32, 24))
    with shards_without_ray():
        assert main(["-q", "data", "shards", "--format", "vg", "--root", str(city), "--seg-model", "gt",
                     "--out", str(base / "shards"), "--size", "32x24", "--workers", "1"]) == 0
    return base


@pytest.fixture
def ws(template, tmp_path, monkeypatch):
    """The working folder of one case: the dataset, the shards, and bad files to name."""
    tmp_path = tmp_path.resolve()
    shutil.copytree(template, tmp_path, dirs_exist_ok=True, symlinks=True)
    (tmp_path / "notes.txt").write_text("a user's file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint")
    torch.save(fake_checkpoint(), tmp_path / "crafted.ckpt")
    torch.save(fake_checkpoint(arch=5, image_size="big"), tmp_path / "wrongtypes.ckpt")
    data = (tmp_path / "crafted.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    torch.save(fake_checkpoint(metrics=Evil(tmp_path / "PWNED")), tmp_path / "pickled.ckpt")
    (tmp_path / "config-only").mkdir()
    (tmp_path / "photos").mkdir()
    for role in ("database", "query"):
        (tmp_path / "msls" / "train_val" / "berlin" / role).mkdir(parents=True)
    (tmp_path / "msls" / "train_val" / "berlin" / "database" / "postprocessed.csv").write_bytes(b"\xff\xfekey\x00,\x81")
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(argv, folder, capsys):
    """(exit status, stderr) of `structvpr -q argv`; `folder` must be left as it was."""
    before = tree_files(folder)
    try:
        code = main(["-q", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert tree_files(folder) == before, "a refused command wrote or deleted files"
    return code, err


def expand(items, ws):
    return [str(item).replace("{ws}", str(ws)) for item in items]


SYNTH = ["data", "synth", "{ws}/newcity", "--preset", "tiny", "--workers", "1"]
SEG = ["seg", "train", "--data", "{ws}/city", "--out", "{ws}/seg.ckpt", "--epochs", "1", "--max-steps", "1",
       "--size", "32x32", "--batch-size", "2"]
SHARDS = ["data", "shards", "--format", "vg", "--root", "{ws}/city", "--seg-model", "gt", "--out", "{ws}/out",
          "--size", "32x24", "--workers", "1"]

CASES = {
    # data synth
    "synth-out-is-a-file": (["data", "synth", "{ws}/notes.txt"], ["{ws}/notes.txt", "is a file"]),
    "synth-out-under-a-file": (["data", "synth", "{ws}/notes.txt/city"], ["{ws}/notes.txt"]),
    "synth-out-is-a-dataset": (["data", "synth", "{ws}/city", "--preset", "tiny"], ["{ws}/city", "no synth run"]),
    "synth-preset": (SYNTH + ["--preset", "huge"], ["'huge'"]),
    "synth-size-malformed": (SYNTH + ["--size", "10"], ["--size", "'10'"]),
    "synth-size-zero": (SYNTH + ["--size", "0x0"], ["--size", "0x0"]),
    "synth-seed-negative": (SYNTH + ["--seed", "-1"], ["--seed", "-1"]),
    "synth-seed-not-a-number": (SYNTH + ["--seed", "one"], ["--seed", "'one'"]),
    "synth-workers-zero": (SYNTH + ["--workers", "0"], ["--workers", "0"]),
    "synth-workers-negative": (SYNTH + ["--workers", "-2"], ["--workers", "-2"]),
    # seg train
    "seg-data-missing": (SEG + ["--data", "{ws}/nowhere"], ["{ws}/nowhere"]),
    "seg-data-is-a-file": (SEG + ["--data", "{ws}/notes.txt"], ["{ws}/notes.txt"]),
    "seg-data-unlabelled": (SEG + ["--data", "{ws}/empty"], ["{ws}/empty"]),
    "seg-out-is-a-folder": (SEG + ["--out", "{ws}/empty"], ["{ws}/empty", "is a folder"]),
    "seg-out-is-a-users-file": (SEG + ["--out", "{ws}/notes.txt"], ["{ws}/notes.txt", "not a segmentation checkpoint"]),
    "seg-out-under-a-file": (SEG + ["--out", "{ws}/notes.txt/seg.ckpt"], ["{ws}/notes.txt", "is a file"]),
    "seg-epochs-zero": (SEG + ["--epochs", "0"], ["--epochs", "0"]),
    "seg-epochs-negative": (SEG + ["--epochs", "-3"], ["--epochs", "-3"]),
    "seg-batch-size-zero": (SEG + ["--batch-size", "0"], ["--batch-size", "0"]),
    "seg-max-steps-zero": (SEG + ["--max-steps", "0"], ["--max-steps", "0"]),
    "seg-lr-zero": (SEG + ["--lr", "0"], ["--lr", "0"]),
    "seg-lr-nan": (SEG + ["--lr", "nan"], ["--lr", "nan"]),
    "seg-lr-inf": (SEG + ["--lr", "inf"], ["--lr", "inf"]),
    "seg-lr-not-a-number": (SEG + ["--lr", "fast"], ["--lr", "'fast'"]),
    "seg-seed-negative": (SEG + ["--seed", "-1"], ["--seed", "-1"]),
    "seg-size-malformed": (SEG + ["--size", "10"], ["--size", "'10'"]),
    "seg-size-tiny": (SEG + ["--size", "4x0"], ["--size", "4x0"]),
    "seg-arch": (SEG + ["--arch", "Nope"], ["--arch", "'Nope'"]),
    "seg-encoder": (SEG + ["--encoder", "nope"], ["--encoder", "'nope'"]),
    # data shards
    "shards-root-missing": (SHARDS + ["--root", "{ws}/nowhere"], ["{ws}/nowhere"]),
    "shards-root-is-a-file": (SHARDS + ["--root", "{ws}/notes.txt"], ["{ws}/notes.txt"]),
    "shards-root-without-splits": (SHARDS + ["--root", "{ws}/empty"], ["{ws}/empty"]),
    "shards-root-is-other-format": (SHARDS + ["--format", "msls"], ["{ws}/city"]),
    "shards-csv-not-text": (SHARDS + ["--format", "msls", "--root", "{ws}/msls"],
                            ["{ws}/msls/train_val/berlin/database/postprocessed.csv"]),
    "shards-format": (SHARDS + ["--format", "kitti"], ["--format", "'kitti'"]),
    "shards-split-missing": (SHARDS + ["--splits", "test"], ["'test'", "{ws}/city"]),
    "shards-split-unknown": (SHARDS + ["--splits", "holiday"], ["--splits", "'holiday'"]),
    "shards-seg-model-missing": (SHARDS + ["--seg-model", "{ws}/nowhere.ckpt"], ["{ws}/nowhere.ckpt"]),
    "shards-seg-model-not-a-checkpoint": (SHARDS + ["--seg-model", "{ws}/garbage.ckpt"], ["{ws}/garbage.ckpt"]),
    "shards-seg-model-an-image": (SHARDS + ["--seg-model", "{ws}/notes.txt"], ["{ws}/notes.txt"]),
    "shards-seg-model-truncated": (SHARDS + ["--seg-model", "{ws}/truncated.ckpt"], ["{ws}/truncated.ckpt"]),
    "shards-seg-model-wrong-types": (SHARDS + ["--seg-model", "{ws}/wrongtypes.ckpt"], ["{ws}/wrongtypes.ckpt", "'arch'"]),
    "shards-seg-model-weights-do-not-fit": (SHARDS + ["--seg-model", "{ws}/crafted.ckpt"], ["{ws}/crafted.ckpt"]),
    "shards-seg-model-folder": (SHARDS + ["--seg-model", "{ws}/config-only"], ["config-only"]),
    "shards-seg-model-hub": (SHARDS + ["--seg-model", "hub:nobody/no-such-model"], ["nobody/no-such-model"]),
    "shards-seg-model-bare-hub-id": (SHARDS + ["--seg-model", "nobody/no-such-model"], ["nobody/no-such-model"]),
    "shards-out-is-a-file": (SHARDS + ["--out", "{ws}/notes.txt"], ["{ws}/notes.txt", "is a file"]),
    "shards-out-is-the-root": (SHARDS + ["--out", "{ws}/city", "--overwrite"], ["{ws}/city"]),
    "shards-out-inside-the-root": (SHARDS + ["--out", "{ws}/city/images/shards"], ["{ws}/city/images/shards", "{ws}/city"]),
    "shards-out-not-a-build": (SHARDS + ["--out", "{ws}/photos"], ["{ws}/photos", "plan.json"]),
    "shards-overwrite-not-a-build": (SHARDS + ["--out", "{ws}/photos", "--overwrite"], ["{ws}/photos", "--overwrite"]),
    "shards-out-another-build": (SHARDS + ["--out", "{ws}/shards", "--images-per-place", "2"], ["{ws}/shards", "--overwrite"]),
    "shards-size-malformed": (SHARDS + ["--size", "10"], ["--size", "'10'"]),
    "shards-size-tiny": (SHARDS + ["--size", "4x4"], ["--size", "4x4"]),
    "shards-size-negative": (SHARDS + ["--size=-32x24"], ["--size", "-32x24"]),
    "shards-images-per-place-zero": (SHARDS + ["--images-per-place", "0"], ["--images-per-place", "0"]),
    "shards-shard-images-negative": (SHARDS + ["--shard-images", "-1"], ["--shard-images", "-1"]),
    "shards-place-radius-negative": (SHARDS + ["--place-radius", "-5"], ["--place-radius", "-5"]),
    "shards-place-radius-nan": (SHARDS + ["--place-radius", "nan"], ["--place-radius", "nan"]),
    "shards-workers-zero": (SHARDS + ["--workers", "0"], ["--workers", "0"]),
    # data verify
    "verify-missing": (["data", "verify", "{ws}/nowhere"], ["{ws}/nowhere"]),
    "verify-a-file": (["data", "verify", "{ws}/notes.txt"], ["{ws}/notes.txt"]),
    "verify-not-a-shard-folder": (["data", "verify", "{ws}/city"], ["{ws}/city", "manifest.json"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_argument_is_refused_naming_it(name, ws, capsys):
    argv, named = CASES[name]
    code, err = run(expand(argv, ws), ws, capsys)
    assert_refused(code, err, expand(named, ws))


def test_checkpoint_with_a_pickled_payload_is_refused_and_never_run(ws, capsys):
    code, err = run(expand(SHARDS + ["--seg-model", "{ws}/pickled.ckpt"], ws), ws, capsys)
    assert_refused(code, err, [str(ws / "pickled.ckpt")])
    assert not (ws / "PWNED").exists()
    torch.load(ws / "pickled.ckpt", weights_only=False)  # the payload is live: loaded unsafely, it runs
    assert (ws / "PWNED").exists()


MANIFEST_DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "not-json": lambda text: "manifest, version 1\n",
    "a-list": lambda text: "[]",
    "image-size-a-word": lambda text: text.replace('"image_size": [', '"image_size": ["big", '),
    "categories-by-name": lambda text: json.dumps(_edit(text, lambda m: m["segmentation"]["class_map"].update(
        categories={"sky": "0"}))),
    "shard-without-sha256": lambda text: json.dumps(_edit(text, lambda m: m["shards"][0].pop("sha256"))),
    "shard-bytes-a-string": lambda text: json.dumps(_edit(text, lambda m: m["shards"][0].update(bytes="many"))),
    "shard-path-escapes": lambda text: json.dumps(_edit(text, lambda m: m["shards"][0].update(path="../../etc/passwd"))),
    "shards-a-dict": lambda text: json.dumps(_edit(text, lambda m: m.update(shards={}))),
}


def _edit(text, change):
    manifest = json.loads(text)
    change(manifest)
    return manifest


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_broken_manifest_is_one_clear_error(damage, ws, capsys):
    manifest = ws / "shards" / "manifest.json"
    manifest.write_text(MANIFEST_DAMAGE[damage](manifest.read_text()))
    code, err = run(["data", "verify", str(ws / "shards")], ws, capsys)
    assert_refused(code, err, [str(manifest)])


def _rewrite_shard(folder: Path, relative: str, change) -> None:
    """Rewrite one shard with `change(tar_in, tar_out)` and make the manifest's bytes and sha256 match it."""
    path = folder / relative
    buffer = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        change(src, dst)
    path.write_bytes(buffer.getvalue())
    _match_manifest(folder, relative)


def _match_manifest(folder: Path, relative: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["shards"] if e["path"] == relative)
    entry.update(bytes=(folder / relative).stat().st_size, sha256=sha256_file(folder / relative))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _copy_adding(member_type: bytes, name: str, linkname: str = ""):
    """A change that copies every member and adds an empty one of this type, name and link target."""
    def change(src, dst):
        for member in src:
            dst.addfile(member, src.extractfile(member))
        extra = tarfile.TarInfo(name)
        extra.type, extra.linkname = member_type, linkname
        dst.addfile(extra, io.BytesIO(b"") if member_type == tarfile.REGTYPE else None)
    return change


SHARD_DAMAGE = {
    "symlink-member": (_copy_adding(tarfile.SYMTYPE, "evil.jpg", "/etc/passwd"), "'evil.jpg': a symbolic link"),
    "hardlink-member": (_copy_adding(tarfile.LNKTYPE, "twin.jpg", "missing.jpg"), "'twin.jpg': a hard link"),
    "folder-member": (_copy_adding(tarfile.DIRTYPE, "folder.jpg"), "'folder.jpg': a folder"),
    "fifo-member": (_copy_adding(tarfile.FIFOTYPE, "pipe.jpg"), "'pipe.jpg': a special file"),
    "absolute-member": (_copy_adding(tarfile.REGTYPE, "/tmp/abs.jpg"), "'/tmp/abs.jpg': an absolute name"),
    "dotdot-member": (_copy_adding(tarfile.REGTYPE, "../../up.jpg"), "'../../up.jpg': an absolute name or one with '..'"),
}


@pytest.mark.parametrize("damage", list(SHARD_DAMAGE))
def test_shard_with_links_folders_or_escaping_names_is_a_fail_line(damage, ws, capsys):
    change, named = SHARD_DAMAGE[damage]
    _rewrite_shard(ws / "shards", "val/queries-000000.tar", change)
    code, err = run(["data", "verify", str(ws / "shards")], ws, capsys)
    assert code == 1, err
    fails = [line for line in err.splitlines() if line.startswith("FAIL val/queries-000000.tar: member ")]
    assert len(fails) == 1 and named in fails[0], err


@pytest.mark.parametrize("damage", ["truncated", "not-a-tar", "empty", "folder"])
def test_corrupt_shard_whose_manifest_matches_is_a_fail_line(damage, ws, capsys):
    relative = "train/places-000000.tar"
    shard = ws / "shards" / relative
    data = shard.read_bytes()
    if damage == "folder":
        shard.unlink()
        shard.mkdir()
    else:
        shard.write_bytes({"truncated": data[: len(data) // 2 + 100], "not-a-tar": b"PK\x03\x04" + data[4:],
                           "empty": b""}[damage])
        _match_manifest(ws / "shards", relative)
    code, err = run(["data", "verify", str(ws / "shards")], ws, capsys)
    assert code == 1, err
    assert any(line.startswith(f"FAIL {relative}: ") for line in err.splitlines()), err


# --- folders and files that cannot be read -----------------------------------------------------------

@contextmanager
def as_user_without_rights():
    """Root reads anything whatever its mode: drop to nobody's effective uid for the block (restored after)."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except PermissionError:
        pytest.skip("running as root without CAP_SETUID: chmod 000 cannot deny root")
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def open_city(template):
    """A copy of the dataset under a folder others may enter (pytest's tmp folders are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="structvpr-unreadable-"))
    base.chmod(0o777)
    shutil.copytree(template / "city", base / "city")
    yield base
    for path in [base, *base.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o777)
    shutil.rmtree(base)


@pytest.mark.parametrize("victim", ["images/val/queries", "images", "", "labels/train/database"])
def test_unreadable_dataset_folder_is_an_error_naming_it(victim, open_city, capsys):
    city = open_city / "city"
    (city / victim).chmod(0o000)
    argv = (["seg", "train", "--data", str(city), "--out", str(open_city / "seg.ckpt")] if victim.startswith("labels")
            else ["data", "shards", "--format", "vg", "--root", str(city), "--seg-model", "gt", "--out",
                  str(open_city / "out"), "--size", "32x24", "--workers", "1"])
    with as_user_without_rights():
        code, err = run(argv, open_city, capsys)
    assert_refused(code, err, [str(city / victim).rstrip("/"), "Permission denied"])


def test_unreadable_or_odd_image_files_are_recorded_skips(open_city, capsys):
    city, out = open_city / "city", open_city / "out"
    queries = sorted((city / "images" / "val" / "queries").iterdir())
    queries[0].chmod(0o000)
    stem = queries[1].name
    queries[1].unlink()
    queries[1].symlink_to(city / "gone.jpg")  # a link to nothing
    (queries[1].parent / stem.replace("@.jpg", "folder@.jpg")).mkdir()  # a folder named like an image
    os.mkfifo(queries[1].parent / stem.replace("@.jpg", "fifo@.jpg"))  # a pipe: opening it would block
    with as_user_without_rights():
        code = main(["-q", "data", "shards", "--format", "vg", "--root", str(city), "--seg-model", "gt",
                     "--out", str(out), "--size", "32x24", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    reasons = {Path(r["path"]).name: r["reason"] for r in rows if r["kind"] == "unreadable_image"}
    assert "Permission denied" in reasons[queries[0].name]
    assert "link to nothing" in reasons[stem]
    assert len(reasons) == 4, reasons
