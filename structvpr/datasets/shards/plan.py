"""Planning shards: which samples exist, which shard each goes to, in an order that is the same on every run.

A fixed plan is what makes building resumable: a rerun finds the same shards
with the same samples, keeps the finished ones, and builds only the rest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from structvpr.datasets.places import PlaceOptions, group_places, pick_views
from structvpr.datasets.records import ImageRecord, Listing, Skip

EVAL_FOLDERS = {"database": "database", "query": "queries"}
SHARD_KINDS = ("places", *EVAL_FOLDERS.values())  # shard file names: <split>/<kind>-NNNNNN.tar


@dataclass
class SampleSpec:
    """One WebDataset sample: a place with its views (train) or a single image (eval)."""

    key: str  # safe id: letters, digits and '_' only (WebDataset splits keys at the first dot)
    place_id: str
    records: list[ImageRecord]

    def to_dict(self) -> dict:
        return {"key": self.key, "place_id": self.place_id, "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict) -> "SampleSpec":
        return cls(d["key"], d["place_id"], [ImageRecord(**r) for r in d["records"]])


@dataclass
class ShardSpec:
    """One shard to build: its path relative to the output folder and its samples in order."""

    path: str  # e.g. train/places-000000.tar, val/queries-000001.tar
    split: str
    kind: str  # places | database | queries
    samples: list[SampleSpec] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return sum(len(s.records) for s in self.samples)

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "split": self.split, "kind": self.kind,
                           "samples": [s.to_dict() for s in self.samples]})

    @classmethod
    def from_json(cls, text: str) -> "ShardSpec":
        d = json.loads(text)
        return cls(d["path"], d["split"], d["kind"], [SampleSpec.from_dict(s) for s in d["samples"]])


@dataclass
class PlanOptions:
    images_per_place: int = 4
    min_views: int = 2  # a place seen once teaches a metric loss nothing
    shard_images: int = 1000
    places: PlaceOptions = field(default_factory=PlaceOptions)


def plan_train(listing: Listing, opts: PlanOptions) -> tuple[list[SampleSpec], list[Skip]]:
    """One sample per place with up to K views; places too small, and views past K, are recorded skips."""
    samples = []
    places, skipped = group_places(listing.records, opts.places)
    for place_id, images in places.items():
        if len(images) < opts.min_views:
            skipped += [Skip(r.path, f"place {place_id} has {len(images)} image(s); a training place needs at least {opts.min_views}", "place_too_small") for r in images]
            continue
        views = pick_views(images, opts.images_per_place)
        chosen = {r.path for r in views}
        skipped += [Skip(r.path, f"place {place_id} has {len(images)} images; {opts.images_per_place} views are kept per place (--images-per-place)", "place_overflow") for r in images if r.path not in chosen]
        samples.append(SampleSpec(f"train_place_{len(samples):07d}", place_id, views))
    return samples, skipped


def plan_eval(listing: Listing, split: str, role: str) -> list[SampleSpec]:
    records = sorted((r for r in listing.records if r.role == role), key=lambda r: r.name)
    tag = "db" if role == "database" else "q"
    # Evaluation needs no places: positives are database images within a radius of the query.
    return [SampleSpec(f"{split}_{tag}_{i:07d}", r.place_id or "", [r]) for i, r in enumerate(records)]


def chunk_into_shards(samples: list[SampleSpec], split: str, kind: str, shard_images: int) -> list[ShardSpec]:
    """Cut samples into shards of about shard_images images, never splitting a sample."""
    shards: list[ShardSpec] = []
    current = ShardSpec(f"{split}/{kind}-{0:06d}.tar", split, kind)
    for sample in samples:
        if current.samples and current.num_images + len(sample.records) > shard_images:
            shards.append(current)
            current = ShardSpec(f"{split}/{kind}-{len(shards):06d}.tar", split, kind)
        current.samples.append(sample)
    if current.samples:
        shards.append(current)
    return shards


def plan_shards(listings: dict[str, Listing], opts: PlanOptions) -> tuple[list[ShardSpec], list[Skip]]:
    """Shards for every split: place shards for train, database and query shards for val/test."""
    shards: list[ShardSpec] = []
    skipped: list[Skip] = []
    for split, listing in listings.items():
        skipped += listing.skipped
        if split == "train":
            samples, too_small = plan_train(listing, opts)
            skipped += too_small
            shards += chunk_into_shards(samples, split, "places", opts.shard_images)
            continue
        for role, folder in EVAL_FOLDERS.items():
            shards += chunk_into_shards(plan_eval(listing, split, role), split, folder, opts.shard_images)
    return shards, skipped


def plan_fingerprint(shards: list[ShardSpec], settings: dict) -> str:
    """A hash of everything that decides the shards' contents; a rerun must match it to resume."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for shard in shards:
        digest.update(shard.to_json().encode())
    return digest.hexdigest()
