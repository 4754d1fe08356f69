"""The manifest beside the shards: counts, hashes, class map, model, size, and every skip with its reason."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

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
    with open(out_dir / SKIPPED, "w") as f:
        for row in skipped:
            f.write(json.dumps(row) + "\n")
    _write_sizes(out_dir, shards)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


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
        (out_dir / folder / SIZES).write_text(json.dumps(sizes, indent=1))


def load_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"no {MANIFEST} in {shard_dir}: not a shard folder; build one with `structvpr data shards`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); rebuild the shards") from None


def manifest_hash(shard_dir: str | Path) -> str:
    """Identifies a shard set (used to tag models with the data they were evaluated on)."""
    return hashlib.sha256((Path(shard_dir) / MANIFEST).read_bytes()).hexdigest()


def shard_paths(shard_dir: str | Path, split: str, kind: str) -> list[str]:
    """Absolute paths of the non-empty shards of one split and kind, in order."""
    manifest = load_manifest(shard_dir)
    paths = [str(Path(shard_dir) / s["path"]) for s in manifest["shards"]
             if s["path"].startswith(f"{split}/{kind}-") and s["samples"] > 0]
    if not paths:
        present = sorted({s["path"].rsplit("-", 1)[0] for s in manifest["shards"]})
        raise DatasetError(f"no {split}/{kind} shards in {shard_dir}; present: {present}")
    return paths
