"""Builds small VG-layout datasets with labels for the shard tests (the synthetic city is tested on its own),
shards without Ray, snapshots of folders, and the check of a refused command."""

from __future__ import annotations

import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from structvpr.datasets.vg_names import VGName, format_vg_name

CONDITIONS = ("day", "night", "winter")


def image_and_label(rng: np.random.Generator, size=(64, 48)) -> tuple[np.ndarray, np.ndarray]:
    w, h = size
    label = np.zeros((h, w), np.uint8)
    label[: h // 3] = 5  # sky
    label[h // 3: 2 * h // 3] = rng.integers(1, 8)
    label[2 * h // 3:] = 1  # flat
    x = rng.integers(0, w - 8)
    label[h // 4:, x:x + 8] = 2
    palette = rng.integers(0, 256, size=(8, 3), dtype=np.uint8)
    rgb = palette[label] ^ rng.integers(0, 24, size=(h, w, 3), dtype=np.uint8)
    return rgb, label


def write_view(root: Path, split: str, folder: str, name: str, rgb, label) -> Path:
    img_dir = root / "images" / split / folder
    lab_dir = root / "labels" / split / folder
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(img_dir / name, quality=90)
    Image.fromarray(label).save(lab_dir / (Path(name).stem + ".png"))
    return img_dir / name


def make_vg_tree(root: Path, places: dict[str, int] | None = None, queries_per_place: int = 2, seed: int = 0,
                 size=(64, 48)) -> Path:
    """places: split -> number of places; each place: one day database image and some query views."""
    places = places or {"train": 12, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    index = 0
    for split, count in places.items():
        for _ in range(count):
            east, north = 500000.0 + 100.0 * index, 4400000.0
            for view in range(1 + queries_per_place):
                folder = "database" if view == 0 else "queries"
                cond = CONDITIONS[view % len(CONDITIONS)]
                name = format_vg_name(VGName(east + view * 1.5, north + view * 0.5, "17", "T",
                                             pano_id=f"p{index:05d}", heading="90", note=cond))
                write_view(root, split, folder, name, *image_and_label(rng, size))
            index += 1
    return root


def write_shards_here(pending, out, opts, done) -> None:
    """`build.run_shard_actors` without Ray: the same ShardWriter, in this process, for tests about files, not Ray."""
    from structvpr.datasets.shards.shard_writer import ShardWriter

    writer = ShardWriter(str(out), opts.image_size)
    for spec in pending:
        writer.write(spec)


def no_ray(*args, **kwargs):
    raise AssertionError("Ray was started: bad input must be refused before ensure_ray()")


@contextmanager
def shards_without_ray():
    """Builds write their shards in this process; starting Ray fails the test."""
    import pytest

    from structvpr import runtime
    from structvpr.datasets.shards import build

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "run_shard_actors", write_shards_here)
        mp.setattr(runtime, "ensure_ray", no_ray)
        yield


def tree_files(folder: Path) -> dict[str, int]:
    """Every entry under `folder`, links not followed: relative path -> size (-1 for folders)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = -1 if stat.S_ISDIR(info.st_mode) else info.st_size
    return found


ERROR_LINE = re.compile(r"structvpr( [a-z]+)*: error: ")


def assert_refused(code, err: str, named) -> None:
    """Exit status 2, one error, the last line `structvpr[ <command>]: error: ...` naming each of `named`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and ERROR_LINE.match(lines[-1]) and err.count(": error: ") == 1, err
    for text in named:
        assert str(text) in lines[-1], f"{text!r} not named in: {lines[-1]}"
