"""Encoding a split of eval shards into descriptors, in shard order, with the metadata evaluation needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from structvpr.datasets.shards.reader import eval_samples

EVAL_KINDS = {"database": "database", "query": "queries"}


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
