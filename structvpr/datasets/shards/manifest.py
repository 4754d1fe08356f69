"""The manifest beside the shards: counts, hashes, class map, model, size, and every skip with its reason."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from structvpr import __version__
from structvpr.datasets.records import DatasetError

MANIFEST = "manifest.json"
SIZES = "sizes.json"  # open_clip's convention: {"shard.tar": samples} in the shards' folder
SKIPPED = "skipped.jsonl"
FORMAT_VERSION = 1


def assemble_manifest(out_dir: Path, settings: dict, shard_stats: list[dict], skipped: list[dict]) -> dict:
    """Write manifest.json, one sizes.json per folder, and skipped.jsonl; return the manifest."""
    shards = sorted(shard_stats, key=lambda s: s["path"])
    by_kind = Counter(s.get("kind") or "other" for s in skipped)
    manifest = {
        "format_version": FORMAT_VERSION,
        "structvpr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **settings,
        "shards": [{k: v for k, v in s.items() if k != "skipped"} for s in shards],
        "splits": _split_totals(shards),
        "totals": {
            "shards": len(shards),
            "samples": sum(s["samples"] for s in shards),
            "images": sum(s["images"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "skipped": len(skipped),
        },
        "skipped": {"count": len(skipped), "by_kind": dict(sorted(by_kind.items())), "file": SKIPPED,
                    "examples": skipped[:20]},
    }
    with atomic_text(out_dir / SKIPPED) as f:
        for row in skipped:
            f.write(json.dumps(row) + "\n")
    _write_sizes(out_dir, shards)
    write_text_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def temporary_name(path: Path) -> Path:
    """Where a file of a build is written before it is renamed into place (`--overwrite` knows the pattern)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_text(path: Path):
    """A text file written whole or not at all; renamed over `path`, so a symlink there is replaced, never followed."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """The hash a manifest records for each shard (here, not in the writer: `data verify` reads it without torch)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            digest.update(data)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_text(path) as f:
        f.write(text)


def _split_totals(shards: list[dict]) -> dict:
    totals: dict = {}
    for s in shards:
        split, name = s["path"].split("/", 1)
        kind = name.rsplit("-", 1)[0]
        entry = totals.setdefault(split, {}).setdefault(kind, {"shards": 0, "samples": 0, "images": 0})
        entry["shards"] += 1
        entry["samples"] += s["samples"]
        entry["images"] += s["images"]
    return totals


def _write_sizes(out_dir: Path, shards: list[dict]) -> None:
    folders: dict[str, dict] = {}
    for s in shards:
        folder, name = s["path"].rsplit("/", 1)
        folders.setdefault(folder, {})[name] = s["samples"]
    for folder, sizes in folders.items():
        write_text_atomic(out_dir / folder / SIZES, json.dumps(sizes, indent=1))


def load_manifest(shard_dir: str | Path) -> dict:
    """The manifest as written, for the data tools; the training half reads `Manifest` instead."""
    return Manifest.load(shard_dir).data


def manifest_hash(shard_dir: str | Path) -> str:
    """Identifies a shard set (used to tag models with the data they were evaluated on)."""
    return Manifest.load(shard_dir).hash


def shard_paths(shard_dir: str | Path, split: str, kind: str) -> list[str]:
    """Absolute paths of the non-empty shards of one split and kind, in order."""
    return Manifest.load(shard_dir).shard_paths(split, kind)


@dataclass(frozen=True)
class Manifest:
    """A shard folder's manifest, read and checked once: the contract between the data and training halves."""

    folder: Path
    data: dict
    hash: str
    """sha256 of manifest.json: identifies the shard set (models are tagged with it)."""

    @classmethod
    def load(cls, shard_dir: str | Path) -> "Manifest":
        path = Path(shard_dir) / MANIFEST
        if not path.is_file():
            raise DatasetError(f"no {MANIFEST} in {shard_dir}: not a shard folder; build one with `structvpr data shards`")
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except OSError as exc:
            raise DatasetError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc}); rebuild the shards") from None
        manifest = cls(Path(shard_dir), data, hashlib.sha256(raw).hexdigest())
        manifest._check(path)
        return manifest

    def _check(self, path: Path) -> None:
        """The keys the platform reads, with their types: a clear message instead of a KeyError mid-job."""
        problem = _manifest_problem(self.data)
        if problem:
            raise DatasetError(f"{path}: {problem}; rebuild the shards with `structvpr data shards`")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of every stored image and segmentation map."""
        width, height = self.data["image_size"]
        return int(width), int(height)

    @property
    def categories(self) -> dict:
        """Structural category id (as a string) -> name, void (0) included."""
        return self.data["segmentation"]["class_map"]["categories"]

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    def shard_paths(self, split: str, kind: str) -> list[str]:
        """Absolute paths of the non-empty shards of one split and kind, in order."""
        paths = [str(self.folder / s["path"]) for s in self.data["shards"]
                 if s["path"].startswith(f"{split}/{kind}-") and s["samples"] > 0]
        if not paths:
            present = sorted({s["path"].rsplit("-", 1)[0] for s in self.data["shards"]})
            raise DatasetError(f"no {split}/{kind} shards in {self.folder}; present: {present}")
        return paths


def _manifest_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    size = data.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return f"image_size must be [width, height] in pixels, got {size!r}"
    segmentation = data.get("segmentation")
    class_map = segmentation.get("class_map") if isinstance(segmentation, dict) else None
    categories = class_map.get("categories") if isinstance(class_map, dict) else None
    if not isinstance(categories, dict) or not categories:
        return "segmentation.class_map.categories is missing or empty"
    if not all(isinstance(k, str) and k.isdigit() for k in categories):
        return f"segmentation.class_map.categories must map ids ('0', '1', ...) to names, got keys {list(categories)[:8]}"
    shards = data.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("path"), str)
                                               and isinstance(s.get("samples"), int) for s in shards):
        return "shards must be a list of {path, samples, ...} entries"
    outside = [s["path"] for s in shards if not _stays_inside(s["path"])]
    if outside:
        return f"shard path {outside[0]!r} leaves the shard folder (absolute or with '..')"
    return None


def _stays_inside(relative: str) -> bool:
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in relative


def print_build_summary(manifest: dict, out: str) -> None:
    """What a build wrote, per split and kind, and what it skipped (printed by `data shards` and the demo)."""
    totals = manifest["totals"]
    print(f"wrote {totals['shards']} shards, {totals['samples']} samples, {totals['images']} images, "
          f"{totals['bytes'] / 1e6:.1f} MB to {out}")
    for split, kinds in manifest["splits"].items():
        for kind, t in kinds.items():
            print(f"  {split}/{kind}: {t['samples']} samples, {t['images']} images in {t['shards']} shard(s)")
    skipped = manifest["skipped"]
    if skipped["count"]:
        print(f"skipped {skipped['count']} input(s): {skipped['by_kind']} (every one with its reason in {out}/{skipped['file']})")
