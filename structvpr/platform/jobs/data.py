"""The training loader of one Ray Train worker: P places x K views batches from the train shards."""

from __future__ import annotations

import torch

from structvpr.datasets.shards.reader import PlaceBatchConfig, place_stream, train_urls
from structvpr.platform.jobs.job_kind import job_kind
from structvpr.platform.recipe import Recipe


def training_loader(recipe: Recipe, rank: int, world_size: int, start_epoch: int = 0,
                    exclude_places: frozenset[int] = frozenset()) -> torch.utils.data.DataLoader:
    """P places x K views batches for this rank: iterate it once per epoch, from `start_epoch` on.

    One loader (and one stream of shards, in workers that persist) serves the whole job; each epoch
    goes on drawing where the last one stopped. Only the images the job reads are decoded.
    """
    cfg = PlaceBatchConfig(places_per_batch=recipe.data.places_per_batch, views_per_place=recipe.data.views_per_place,
                           shuffle_buffer=recipe.data.shuffle_buffer, seed=recipe.train.seed, resampled=True,
                           batches_per_epoch=recipe.data.batches_per_epoch, members=job_kind(recipe).members_read(),
                           exclude_places=frozenset(exclude_places))
    stream = place_stream(train_urls(recipe.data.shards), cfg, rank, world_size, start_epoch)
    workers = recipe.data.loader_workers
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
