"""The weighting gallery: teacher and student descriptors of every stored training view, refreshed per epoch.

Ranks r_T and r_S are taken against this gallery, not the batch: a teacher
ranks the positives of its own training batches first almost always, which
would empty the noisy group (docs/METHOD.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.shards.tar_reader import read_tar_samples
from structvpr.datasets.shards.reader import place_label, train_urls


@dataclass
class Gallery:
    teacher: torch.Tensor | None  # [G, Dt]; None when r_T comes from a ranks table (kd.ranks=out_of_fold)
    student: torch.Tensor  # [G, Ds]
    labels: torch.Tensor  # [G] place labels
    rows: dict[tuple[int, int], int]  # (place, stored view) -> row
    conditions: list[str]  # [G] each view's condition (the weighting groups are counted per condition)

    @property
    def condition_names(self) -> list[str]:
        return sorted(set(self.conditions))

    def rows_of(self, places: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Gallery rows of a batch's images ([P] places, [P, K] views) in flatten_views order."""
        return torch.tensor([self.rows[(int(p), int(v))] for p, row in zip(places, views) for v in row])


def _views(shard_dir: str, rank: int, world_size: int):
    """((place, view, condition), rgb, seg) of every stored view in this rank's share of the train shards."""
    urls = train_urls(shard_dir)[rank::world_size]
    for sample in read_tar_samples(urls):
        place = place_label(sample["__key__"])
        meta = json.loads(sample["json"])
        for view in range(meta["num_views"]):
            condition = (meta.get("views") or [{}] * meta["num_views"])[view].get("condition") or ""
            yield (place, view, condition), decode_rgb(sample[f"{view}.jpg"]), decode_ids(sample[f"{view}.seg.png"])


@torch.no_grad()
def encode_views(models: dict[str, nn.Module], shard_dir: str, device, rank: int = 0, world_size: int = 1,
                 batch_size: int = 64) -> tuple[dict[str, torch.Tensor], list[tuple[int, int, str]]]:
    """Descriptors of every stored training view under each model, gathered from all ranks in a fixed order,
    and each view's (place, view, condition)."""
    keys, outs, batch = [], {name: [] for name in models}, []

    def flush():
        for name, model in models.items():
            outs[name].append(_embed(model, batch, device))
        batch.clear()

    for key, rgb, seg in _views(shard_dir, rank, world_size):
        keys.append(key)
        batch.append((rgb, seg))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    local = {name: torch.cat(parts) if parts else torch.empty(0) for name, parts in outs.items()}
    return _gather(local, keys, world_size)


def _embed(model: nn.Module, batch: list, device) -> torch.Tensor:
    was_training = model.training
    model.eval()
    if getattr(model, "input_kind", "rgb") == "seg":
        raw = torch.from_numpy(np.stack([seg for _, seg in batch])).to(device)
    else:
        raw = torch.from_numpy(np.stack([rgb for rgb, _ in batch])).permute(0, 3, 1, 2).to(device)
    out = model.embed(raw).float().cpu()
    model.train(was_training)
    return out


def _gather(local: dict, keys: list, world_size: int):
    if world_size == 1:
        return local, keys
    parts = [None] * world_size
    torch.distributed.all_gather_object(parts, (local, keys))
    merged = {name: torch.cat([p[0][name] for p in parts if len(p[1])]) for name in local}
    return merged, [k for p in parts for k in p[1]]


def build_gallery(student: nn.Module, teacher_desc: torch.Tensor | None, teacher: nn.Module | None, shard_dir: str,
                  device, rank: int, world_size: int) -> tuple[Gallery, torch.Tensor | None]:
    """A fresh gallery; the frozen teacher's descriptors are computed once and passed back in after.

    teacher None: no teacher gallery (r_T comes from a ranks table, only r_S is ranked here)."""
    models = {"student": student}
    if teacher is not None and teacher_desc is None:
        models["teacher"] = teacher
    descs, keys = encode_views(models, shard_dir, device, rank, world_size)
    teacher_desc = teacher_desc if teacher_desc is not None else descs.get("teacher")
    rows = {(place, view): i for i, (place, view, _) in enumerate(keys)}
    labels = torch.tensor([place for place, _, _ in keys])
    return Gallery(None if teacher_desc is None else teacher_desc.to(device), descs["student"].to(device),
                   labels.to(device), rows, [condition for _, _, condition in keys]), teacher_desc
