"""`structvpr data verify`: re-hash every shard against the manifest and decode every member."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import MANIFEST, Manifest, sha256_file


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    images: int = 0
    problems: list[str] = field(default_factory=list)  # each names its shard

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shards(shard_dir: str | Path, decode: bool = True, progress: bool = True) -> VerifyReport:
    """Every problem is a line naming its shard (and member); a manifest that cannot be used is a DatasetError."""
    shard_dir = Path(shard_dir)
    manifest = Manifest.load(shard_dir)  # checked: a broken manifest is one clear error
    _check_entries(manifest)
    valid_ids = np.array(sorted(int(k) for k in manifest.categories))
    size = manifest.image_size
    report = VerifyReport()
    for entry in tqdm(manifest.data["shards"], desc="verify", unit="shard", disable=not progress):
        report.shards += 1
        problems = check_shard(shard_dir, entry, valid_ids, size, decode, report)
        report.problems += [f"{entry['path']}: {p}" for p in problems]
    return report


def _check_entries(manifest: Manifest) -> None:
    """What verify reads of each shard entry besides the platform's contract: byte count, sha256, image count."""
    for entry in manifest.data["shards"]:
        ok = (isinstance(entry.get("bytes"), int) and isinstance(entry.get("images"), int)
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
        if not ok:
            raise DatasetError(
                f"{manifest.folder / MANIFEST}: shard entry {entry['path']!r} lacks an integer bytes/images or a "
                "sha256 hex digest; rebuild the shards with `structvpr data shards`"
            )


def check_shard(shard_dir: Path, entry: dict, valid_ids: np.ndarray, size: tuple, decode: bool, report: VerifyReport) -> list[str]:
    path = shard_dir / entry["path"]
    if not path.is_file():
        return ["missing or not a file; rebuild with `structvpr data shards` (finished shards are kept)"]
    if path.stat().st_size != entry["bytes"]:
        return [f"{path.stat().st_size} bytes, manifest says {entry['bytes']} (truncated or altered)"]
    if sha256_file(path) != entry["sha256"]:
        return ["sha256 differs from the manifest (altered or corrupt)"]
    if not decode:
        return []
    try:
        samples, images, problems = decode_shard(path, valid_ids, size)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [f"not a readable tar ({exc or type(exc).__name__}); rebuild the shard"]
    report.samples += samples
    report.images += images
    if samples != entry["samples"] or images != entry["images"]:
        problems.append(f"holds {samples} samples / {images} images, manifest says {entry['samples']} / {entry['images']}")
    return problems


def decode_shard(path: Path, valid_ids: np.ndarray, size: tuple) -> tuple[int, int, list[str]]:
    """Decode every member; counts samples (keys) and images (jpg members)."""
    keys, images, problems = set(), 0, []
    with tarfile.open(path, mode="r:") as tar:  # plain tar only: shards are never compressed
        for member in tar:
            problem = member_problem(member)
            if problem:
                problems.append(f"member {member.name!r}: {problem}")
                continue
            key, _, ext = member.name.partition(".")
            keys.add(key)
            data = tar.extractfile(member).read()
            problem = check_member(ext, data, valid_ids, size)
            if problem:
                problems.append(f"{member.name}: {problem}")
            images += ext.endswith("jpg")
    return len(keys), images, problems


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Shards hold regular files with plain relative names; links, folders and escaping names are findings."""
    if not member.isfile():
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a folder" if member.isdir() else "a special file")
        target = f" to {member.linkname!r}" if member.linkname else ""
        return f"{kind}{target}, not a regular file; shards hold only regular files (rebuild the shard)"
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "an absolute name or one with '..'; shards hold only plain relative names (rebuild the shard)"
    return None


def check_member(ext: str, data: bytes, valid_ids: np.ndarray, size: tuple) -> str | None:
    try:
        if ext.endswith("jpg"):
            rgb = decode_rgb(data)
            return None if (rgb.shape[1], rgb.shape[0]) == size else f"image is {rgb.shape[1]}x{rgb.shape[0]}, expected {size[0]}x{size[1]}"
        if ext.endswith("seg.png"):
            ids = decode_ids(data)
            if ids.ndim != 2 or (ids.shape[1], ids.shape[0]) != size:
                return f"segmentation has shape {ids.shape}, expected {size[1]}x{size[0]} single channel"
            unknown = np.setdiff1d(np.unique(ids), valid_ids)
            return f"segmentation has unknown ids {unknown.tolist()}" if unknown.size else None
        if ext == "json":
            json.loads(data)
            return None
    except Exception as exc:  # any decode failure is a finding, reported with its member
        return f"cannot decode ({exc})"
    return f"unexpected member extension {ext!r}"
