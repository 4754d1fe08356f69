"""Reading shards for training and evaluation: the WebDataset pipelines that Ray Train workers use.

Training reads place samples as P places x K views batches, split by rank and
by DataLoader worker. Resampled mode (the default) draws shards at random per
rank, so every rank gets the same number of batches per epoch even when shards
are uneven: plain splitting left one DDP rank without batches and hung the
others (see PLATFORM-NOTES).
"""

from __future__ import annotations

import json
import random
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds

from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.shards.manifest import shard_paths


@dataclass
class PlaceBatchConfig:
    places_per_batch: int = 32  # P
    views_per_place: int = 4  # K; places with fewer stored views repeat some
    shuffle_buffer: int = 256  # samples, not batches
    seed: int = 0
    resampled: bool = True
    batches_per_epoch: int | None = None  # per rank; needed with resampled, else one pass over the shards


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when it is up, else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return info.id if info is not None else 0


def split_by_rank(rank: int, world_size: int):
    """A shard-list stage keeping every world_size-th shard, starting at rank."""

    def stage(src):
        for i, item in enumerate(src):
            if i % world_size == rank:
                yield item

    return stage


def place_label(key: str) -> int:
    """Place samples are keyed train_place_NNNNNNN: the number is a dataset-wide place index."""
    return int(key.rsplit("_", 1)[1])


def decode_place(sample: dict, views: int, rng: random.Random) -> dict:
    """K views of one place: a random K of the stored views, repeating views where fewer are stored."""
    meta = json.loads(sample["json"])
    stored = list(range(meta["num_views"]))
    chosen = rng.sample(stored, views) if len(stored) >= views else stored + rng.choices(stored, k=views - len(stored))
    rgb = [decode_rgb(sample[f"{i}.jpg"]) for i in chosen]  # stacked once, in collate_places
    seg = [decode_ids(sample[f"{i}.seg.png"]) for i in chosen]
    # The stored-view indices let a job find each image's own row in a gallery cache (and exclude it).
    return {"rgb": rgb, "seg": seg, "place": place_label(sample["__key__"]), "key": sample["__key__"], "views": chosen}


def collate_places(samples: list[dict]) -> dict:
    """[P, K, 3, H, W] uint8 RGB, [P, K, H, W] uint8 class ids, [P] place labels, [P, K] stored-view indices."""
    # One copy per image into the batch array; RGB is then a channels-first view (no second copy):
    # the model's preprocessing converts to float anyway.
    h, w, _ = samples[0]["rgb"][0].shape
    k = len(samples[0]["rgb"])
    rgb = np.empty((len(samples), k, h, w, 3), dtype=np.uint8)
    seg = np.empty((len(samples), k, h, w), dtype=np.uint8)
    for i, s in enumerate(samples):
        for j in range(k):
            rgb[i, j] = s["rgb"][j]
            seg[i, j] = s["seg"][j]
    rgb, seg = torch.from_numpy(rgb).permute(0, 1, 4, 2, 3), torch.from_numpy(seg)
    place = torch.tensor([s["place"] for s in samples], dtype=torch.long)
    views = torch.tensor([s["views"] for s in samples], dtype=torch.long)
    return {"rgb": rgb, "seg": seg, "place": place, "views": views, "keys": [s["key"] for s in samples]}


def place_batches(urls: list[str], cfg: PlaceBatchConfig, rank: int | None = None,
                  world_size: int | None = None, epoch: int = 0) -> wds.DataPipeline:
    """The training pipeline over place shards, for one rank (defaults: torch.distributed's)."""
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    base_seed = cfg.seed * 1_000_003 + epoch * 10_007 + rank * 101
    if cfg.resampled:
        source = [wds.ResampledShards(urls, seed=base_seed, deterministic=True, worker_seed=_worker_id)]
    else:
        if len(urls) < world_size:
            raise ValueError(f"{len(urls)} shard(s) cannot be split over {world_size} ranks; use resampled=True or smaller --shard-images")
        source = [wds.SimpleShardList(urls), split_by_rank(rank, world_size), wds.split_by_worker]
    rng = random.Random(base_seed)
    pipeline = wds.DataPipeline(
        *source,
        wds.tarfile_to_samples(),
        wds.shuffle(cfg.shuffle_buffer, initial=min(cfg.shuffle_buffer, 64), seed=base_seed),
        wds.map(partial(decode_place, views=cfg.views_per_place, rng=rng)),
        wds.batched(cfg.places_per_batch, collation_fn=collate_places, partial=False),
    )
    if cfg.resampled:
        if not cfg.batches_per_epoch:
            raise ValueError("resampled reading needs batches_per_epoch (the stream never ends by itself)")
        pipeline = pipeline.with_epoch(nbatches=cfg.batches_per_epoch)
    return pipeline


def train_urls(shard_dir: str | Path) -> list[str]:
    return shard_paths(shard_dir, "train", "places")


def decode_eval(sample: dict) -> dict:
    meta = json.loads(sample["json"])
    return {"key": sample["__key__"], "rgb": decode_rgb(sample["jpg"]), "seg": decode_ids(sample["seg.png"]), "meta": meta}


def eval_samples(shard_dir: str | Path, split: str, role: str) -> Iterator[dict]:
    """Every image of one split and role ('database' or 'queries'), in shard order, decoded."""
    urls = shard_paths(shard_dir, split, role)
    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.map(decode_eval))
    yield from pipeline
