"""Reading shards for training and evaluation: the WebDataset pipelines that Ray Train workers use.

Training reads place samples as P places x K views batches, split by rank and
by DataLoader worker. Resampled mode (the default) draws shards at random per
rank, so every rank gets the same number of batches per epoch even when shards
are uneven: with webdataset 1.0.2 and Ray 2.60, plain `split_by_node` over uneven shards left one
DDP rank without batches while the others waited for it in a collective, and the job hung.

`place_batches` is one pipeline (one epoch with `with_epoch`); `place_stream` is
what the training jobs use: one endless resampled pipeline cut into epochs, so
that the shuffle buffer is not refilled (and its samples thrown away) at every
epoch's end.
"""

from __future__ import annotations

import itertools
import json
import random
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import webdataset as wds

from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.shards.manifest import shard_paths
from structvpr.datasets.shards.tar_reader import read_tar_samples, tar_samples


MEMBER_SUFFIX = {"rgb": "jpg", "seg": "seg.png"}
DECODERS = {"rgb": decode_rgb, "seg": decode_ids}


@dataclass
class PlaceBatchConfig:
    places_per_batch: int = 32  # P
    views_per_place: int = 4  # K; places with fewer stored views repeat some
    shuffle_buffer: int = 256  # samples, not batches
    seed: int = 0
    resampled: bool = True
    batches_per_epoch: int | None = None  # per rank; needed with resampled, else one pass over the shards
    members: tuple[str, ...] = ("rgb", "seg")  # which images to decode: a teacher needs only "seg"
    exclude_places: frozenset[int] = frozenset()  # places never read (a fold teacher's held-out fold)

    def __post_init__(self):
        if not self.members or not set(self.members) <= set(MEMBER_SUFFIX):
            raise ValueError(f"PlaceBatchConfig.members: {self.members!r}; give 'rgb', 'seg' or both")


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


def decode_place(sample: dict, views: int, rng: random.Random, members: tuple[str, ...] = ("rgb", "seg")) -> dict:
    """K views of one place: a random K of the stored views, repeating views where fewer are stored."""
    meta = json.loads(sample["json"])
    stored = list(range(meta["num_views"]))
    chosen = rng.sample(stored, views) if len(stored) >= views else stored + rng.choices(stored, k=views - len(stored))
    # Stacked once, in collate_places; members nobody reads are never decoded.
    out = {m: [DECODERS[m](sample[f"{i}.{MEMBER_SUFFIX[m]}"]) for i in chosen] for m in members}
    # The stored-view indices let a job find each image's own row in a gallery cache (and exclude it).
    return out | {"place": place_label(sample["__key__"]), "key": sample["__key__"], "views": chosen}


def collate_places(samples: list[dict]) -> dict:
    """[P, K, 3, H, W] uint8 RGB, [P, K, H, W] uint8 class ids, [P] place labels, [P, K] stored-view indices.

    Only the members the samples were decoded with are in the batch.
    """
    batch = {m: _stack_views([s[m] for s in samples]) for m in MEMBER_SUFFIX if m in samples[0]}
    if "rgb" in batch:
        # RGB as a channels-first view (no second copy): the model's preprocessing converts to float anyway.
        batch["rgb"] = batch["rgb"].permute(0, 1, 4, 2, 3)
    batch["place"] = torch.tensor([s["place"] for s in samples], dtype=torch.long)
    batch["views"] = torch.tensor([s["views"] for s in samples], dtype=torch.long)
    batch["keys"] = [s["key"] for s in samples]
    return batch


def _stack_views(images: list[list[np.ndarray]]) -> torch.Tensor:
    """P lists of K arrays -> one [P, K, ...] tensor, copying each image once (np.stack of stacks copies twice)."""
    first = images[0][0]
    out = np.empty((len(images), len(images[0]), *first.shape), dtype=first.dtype)
    for i, views in enumerate(images):
        for j, image in enumerate(views):
            out[i, j] = image
    return torch.from_numpy(out)


def place_batches(urls: list[str], cfg: PlaceBatchConfig, rank: int | None = None,
                  world_size: int | None = None, epoch: int = 0) -> wds.DataPipeline:
    """The training pipeline over place shards, for one rank (defaults: torch.distributed's), one epoch long."""
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    if cfg.resampled and not cfg.batches_per_epoch:
        raise ValueError("resampled reading needs batches_per_epoch (the stream never ends by itself)")
    pipeline = _place_pipeline(urls, cfg, rank, world_size, epoch)
    return pipeline.with_epoch(nbatches=cfg.batches_per_epoch) if cfg.resampled else pipeline


def _place_pipeline(urls: list[str], cfg: PlaceBatchConfig, rank: int, world_size: int, epoch: int) -> wds.DataPipeline:
    """Shards -> samples -> shuffle -> decode -> P x K batches; endless when resampled."""
    base_seed = cfg.seed * 1_000_003 + epoch * 10_007 + rank * 101
    if cfg.resampled:
        source = [wds.ResampledShards(urls, seed=base_seed, deterministic=True, worker_seed=_worker_id)]
    else:
        if len(urls) < world_size:
            raise ValueError(f"{len(urls)} shard(s) cannot be split over {world_size} ranks; use resampled=True or smaller --shard-images")
        source = [wds.SimpleShardList(urls), split_by_rank(rank, world_size), wds.split_by_worker]
    rng = random.Random(base_seed + 7 * _worker_id())
    return wds.DataPipeline(
        *source,
        tar_samples,
        *([wds.select(partial(_kept, excluded=cfg.exclude_places))] if cfg.exclude_places else []),
        wds.shuffle(cfg.shuffle_buffer, initial=min(cfg.shuffle_buffer, 64), seed=base_seed),
        wds.map(partial(decode_place, views=cfg.views_per_place, rng=rng, members=cfg.members)),
        wds.batched(cfg.places_per_batch, collation_fn=collate_places, partial=False),
    )


def _kept(sample: dict, excluded: frozenset[int]) -> bool:
    return place_label(sample["__key__"]) not in excluded


class EpochSlices(torch.utils.data.IterableDataset):
    """One endless stream read as epochs of `per_epoch` items, each epoch going on where the last one stopped.

    webdataset's `with_epoch` rebuilds its pipeline at every epoch, so the samples left in the shuffle
    buffer at an epoch's end are read and thrown away (at the recipe defaults, 1.4x the tar reading an
    epoch needs). Here the stream lives as long as this object: in a DataLoader worker, as long as the
    worker, which is why `training_loader` keeps its workers (`persistent_workers`). An epoch's items are
    shared out between the DataLoader's workers.
    """

    def __init__(self, make_stream: Callable[[], Iterable], per_epoch: int):
        super().__init__()
        self.make_stream, self.per_epoch = make_stream, per_epoch
        self._stream: Iterator | None = None

    def __getstate__(self):
        # A live generator does not pickle; each DataLoader worker starts its own stream.
        return {**self.__dict__, "_stream": None}

    def __iter__(self) -> Iterator:
        if self._stream is None:
            self._stream = iter(self.make_stream())
        return itertools.islice(self._stream, self._share())

    def _share(self) -> int:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.per_epoch
        return self.per_epoch // info.num_workers + int(info.id < self.per_epoch % info.num_workers)


def place_stream(urls: list[str], cfg: PlaceBatchConfig, rank: int, world_size: int, start_epoch: int = 0) -> EpochSlices:
    """Resampled P x K batches for one rank, `cfg.batches_per_epoch` an epoch, from one stream for the whole job.

    The stream is seeded by `start_epoch`, so a job resumed after epoch e draws the same batches whenever
    it is resumed there (not the batches an uninterrupted run would have drawn after epoch e).
    """
    if not cfg.resampled or not cfg.batches_per_epoch:
        raise ValueError("place_stream reads resampled shards and needs batches_per_epoch")
    return EpochSlices(partial(_place_pipeline, urls, cfg, rank, world_size, start_epoch), cfg.batches_per_epoch)


def train_urls(shard_dir: str | Path) -> list[str]:
    return shard_paths(shard_dir, "train", "places")


def decode_eval(sample: dict) -> dict:
    meta = json.loads(sample["json"])
    return {"key": sample["__key__"], "rgb": decode_rgb(sample["jpg"]), "seg": decode_ids(sample["seg.png"]), "meta": meta}


def eval_samples(shard_dir: str | Path, split: str, role: str) -> Iterator[dict]:
    """Every image of one split and role ('database' or 'queries'), in shard order, decoded."""
    urls = shard_paths(shard_dir, split, role)
    for sample in read_tar_samples(urls):
        yield decode_eval(sample)
