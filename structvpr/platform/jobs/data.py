"""Data for the jobs: the training loader for one rank, and encoding a split of eval shards into descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from structvpr.datasets.shards.reader import PlaceBatchConfig, eval_samples, place_stream, train_urls
from structvpr.platform.recipe import Recipe

EVAL_KINDS = {"database": "database", "query": "queries"}


def training_loader(recipe: Recipe, rank: int, world_size: int, start_epoch: int = 0) -> torch.utils.data.DataLoader:
    """P places x K views batches for this rank: iterate it once per epoch, from `start_epoch` on.

    One loader (and one stream of shards, in workers that persist) serves the whole job; each epoch
    goes on drawing where the last one stopped. Only the images the job reads are decoded.
    """
    cfg = PlaceBatchConfig(places_per_batch=recipe.data.places_per_batch, views_per_place=recipe.data.views_per_place,
                           shuffle_buffer=recipe.data.shuffle_buffer, seed=recipe.train.seed, resampled=True,
                           batches_per_epoch=recipe.data.batches_per_epoch, members=members_read(recipe))
    stream = place_stream(train_urls(recipe.data.shards), cfg, rank, world_size, start_epoch)
    workers = recipe.data.loader_workers
    return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def members_read(recipe: Recipe) -> tuple[str, ...]:
    """The teacher reads segmentation; the student RGB, and segmentation too when its teacher is run for KD."""
    if recipe.kind == "teacher":
        return ("seg",)
    return ("rgb",) if recipe.kd.mode == "none" else ("rgb", "seg")


@dataclass
class EncodedSplit:
    descriptors: np.ndarray  # [N, D] float32, L2-normalised
    utm: np.ndarray  # [N, 2]
    conditions: list[str]
    keys: list[str]


def _input_member(model: nn.Module) -> str:
    return "seg" if getattr(model, "input_kind", "rgb") == "seg" else "rgb"


@torch.no_grad()
def encode_split(model: nn.Module, shard_dir: str, split: str, role: str, device, batch_size: int = 64,
                 progress: bool = False) -> EncodedSplit:
    """Descriptors of every image of one split and role, in shard order."""
    from tqdm import tqdm

    pipeline = eval_samples(shard_dir, split, EVAL_KINDS[role])
    member = _input_member(model)
    model.eval()
    descs, utm, conditions, keys, batch = [], [], [], [], []
    for sample in tqdm(pipeline, desc=f"encode {split}/{role}", unit="img", disable=not progress):
        batch.append(sample)
        if len(batch) == batch_size:
            descs.append(_encode_batch(model, batch, member, device))
            batch = []
        meta = sample["meta"]
        utm.append((meta["utm_east"], meta["utm_north"]))
        conditions.append(meta.get("condition") or "")
        keys.append(sample["key"])
    if batch:
        descs.append(_encode_batch(model, batch, member, device))
    return EncodedSplit(np.concatenate(descs).astype(np.float32), np.asarray(utm, dtype=np.float64), conditions, keys)


def _encode_batch(model: nn.Module, batch: list[dict], member: str, device) -> np.ndarray:
    raw = np.stack([s[member] for s in batch])
    tensor = torch.from_numpy(raw).to(device)
    if member == "rgb":
        tensor = tensor.permute(0, 3, 1, 2)
    return model.embed(tensor).float().cpu().numpy()
