"""Train the category segmentation model on labelled data (`structvpr seg train`)."""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from structvpr.datasets.class_maps import CATEGORIES, NUM_CATEGORIES, VOID, ClassMap
from structvpr.datasets.records import DatasetError, reading
from structvpr.datasets.segmentation.checkpoint import SegCheckpoint, check_target, save_checkpoint
from structvpr.datasets.segmentation.labelled_data import (
    LabelledPair, LabelledSet, labelled_splits, list_labelled, read_pair,
)
from structvpr.datasets.segmentation.model import (
    IMAGENET_MEAN, IMAGENET_STD, build_model, input_multiple, normalise, pad_to_multiple,
)
from structvpr.datasets.segmentation.train_config import SegTrainConfig

log = logging.getLogger(__name__)
SAVE_EVERY_S = 300


class LabelledImages(Dataset):
    """Pairs resized to the training size: (uint8 image (3, H, W), int64 categories (H, W))."""

    def __init__(self, pairs: list[LabelledPair], class_map: ClassMap, image_size: tuple[int, int], flip: bool):
        self.pairs, self.class_map, self.image_size, self.flip = pairs, class_map, tuple(image_size), flip

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        rgb, cats = read_pair(self.pairs[i], self.class_map)
        rgb = np.asarray(Image.fromarray(rgb).resize(self.image_size, Image.BILINEAR))
        cats = np.asarray(Image.fromarray(cats).resize(self.image_size, Image.NEAREST))
        image, label = torch.from_numpy(rgb.copy()).permute(2, 0, 1), torch.from_numpy(cats.astype(np.int64))
        if self.flip and torch.rand(()) < 0.5:  # torch's RNG: seeded per worker by the loader's generator
            image, label = image.flip(-1), label.flip(-1)
        return image, label


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CATEGORIES) -> torch.Tensor:
    """Rows: target, columns: prediction; void target pixels are not scored."""
    keep = target != VOID
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def scores(confusion: torch.Tensor) -> dict:
    """mIoU over the categories seen in the target or the prediction (void excluded), pixel accuracy."""
    cm = confusion.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = {CATEGORIES[c]: float(tp[c] / union[c]) for c in range(1, cm.shape[0]) if union[c] > 0}
    total = cm[1:].sum()
    return {
        "miou": float(np.mean(list(iou.values()))) if iou else 0.0,
        "pixel_acc": float(tp[1:].sum() / total) if total > 0 else 0.0,
        "iou": iou,
    }


def segmentation_scores(preds: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """Scores of category maps against ground-truth category maps (numpy, same sizes)."""
    cm = sum(confusion_matrix(torch.from_numpy(p), torch.from_numpy(t)) for p, t in zip(preds, labels))
    return scores(cm)


def train_segmentation(data: str | Path, out: str | Path, config: SegTrainConfig | None = None, *,
                       progress: bool = True, device: str | None = None, num_workers: int | None = None,
                       **settings) -> dict:
    """Train from scratch on DATA's train split, score on its val split if any, save a checkpoint to OUT.

    `settings` override fields of `config` (default `SegTrainConfig()`), e.g. `epochs=4`.
    """
    cfg = replace(config or SegTrainConfig(), **settings)
    epochs, image_size, batch_size, lr, seed = cfg.epochs, cfg.image_size, cfg.batch_size, cfg.lr, cfg.seed
    arch, encoder, max_steps = cfg.arch, cfg.encoder, cfg.max_steps
    data, out = Path(data), Path(out)
    check_target(out)
    torch.manual_seed(seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with reading(f"the labelled data {data}"):
        train_set = list_labelled(data, "train")
        val_set = list_labelled(data, "val") if "val" in labelled_splits(data) else None
    train_loader = _loader(train_set, image_size, batch_size, True, seed, device, num_workers)
    val_loader = _loader(val_set, image_size, batch_size, False, seed, device, num_workers) if val_set else None

    model = _new_model(arch, encoder).to(device)
    total_steps = epochs * len(train_loader) if max_steps is None else min(max_steps, epochs * len(train_loader))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    step_fn = _Stepper(model, opt, sched, device, input_multiple(model))

    history, steps, images, train_seconds, last_save = [], 0, 0, 0.0, time.monotonic()
    bar = tqdm(total=total_steps, desc="seg train", unit="step", disable=not progress)
    for epoch in range(epochs):
        if steps >= total_steps:
            break
        t0 = time.perf_counter()
        losses, seen = _train_epoch(model, train_loader, step_fn, bar, epoch, total_steps - steps)
        train_seconds += time.perf_counter() - t0
        steps, images = steps + len(losses), images + seen
        record = {"epoch": epoch + 1, "steps": steps, "train_loss": float(np.mean(losses))}
        if val_loader is not None:
            val = evaluate(model, val_loader, device)
            record.update(val_miou=val["miou"], val_pixel_acc=val["pixel_acc"], val_iou=val["iou"])
        history.append(record)
        if progress:
            bar.write(_epoch_line(record))
        log.info(_epoch_line(record))
        metrics = _summary(history, steps, images, train_seconds, train_set, val_set, out)
        # A long run leaves a usable checkpoint every few minutes; short epochs are not slowed by saves.
        if time.monotonic() - last_save > SAVE_EVERY_S:
            _save(model, arch, encoder, train_set, image_size, metrics, out)
            last_save = time.monotonic()
    bar.close()
    _save(model, arch, encoder, train_set, image_size, metrics, out)
    return metrics


def _new_model(arch: str, encoder: str) -> torch.nn.Module:
    try:
        return build_model(arch, encoder, NUM_CATEGORIES)
    except (KeyError, ValueError) as exc:  # smp: "Wrong architecture type ..." / "Wrong encoder name ..."
        raise DatasetError(f"cannot build a segmentation model with --arch {arch!r} --encoder {encoder!r}: "
                           f"{' '.join(str(exc).split())[:240]}") from None


def _train_epoch(model, loader, step_fn, bar, epoch: int, budget: int) -> tuple[list[float], int]:
    """At most `budget` steps over the loader; returns the step losses and the images seen."""
    model.train()
    losses, seen = [], 0
    for image, label in loader:
        losses.append(step_fn(image, label))
        seen += len(image)
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
        if len(losses) >= budget:
            break
    return losses, seen


class _Stepper:
    """One optimiser step: normalise and pad on the device, cross-entropy ignoring void, AMP on CUDA."""

    def __init__(self, model, opt, sched, device, multiple):
        self.model, self.opt, self.sched, self.device, self.multiple = model, opt, sched, device, multiple
        cuda = device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.autocast = (lambda: torch.autocast("cuda", dtype=self.amp_dtype)) if cuda else nullcontext
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.amp_dtype == torch.float16)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> float:
        x, y = _prepare(image, label, self.device, self.multiple)
        with self.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=VOID)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return float(loss.detach())


def _prepare(image, label, device, multiple):
    x = normalise(image.to(device, non_blocking=True), IMAGENET_MEAN, IMAGENET_STD)
    # Padding is labelled void, so it never counts in the loss or the scores.
    y = pad_to_multiple(label.to(device, non_blocking=True), multiple, value=VOID)
    return pad_to_multiple(x, multiple), y


@torch.inference_mode()
def evaluate(model, loader: DataLoader, device) -> dict:
    """Scores at the training resolution (a monitor; the predictor scores at full size)."""
    model.eval()
    cm = torch.zeros(NUM_CATEGORIES, NUM_CATEGORIES, dtype=torch.long)
    multiple = input_multiple(model)
    autocast = torch.autocast("cuda") if device.type == "cuda" else nullcontext()
    for image, label in loader:
        x, y = _prepare(image, label, device, multiple)
        with autocast:
            pred = model(x).argmax(1)
        cm += confusion_matrix(pred, y)
    return scores(cm)


def _loader(found: LabelledSet, image_size, batch_size, train, seed, device, num_workers) -> DataLoader:
    if num_workers is None:
        # On the CPU, loader workers compete with the model for the same few cores.
        num_workers = 0 if device.type == "cpu" else 4
    if not found.pairs:
        raise DatasetError(
            f"no labelled images in split {found.split!r} of {found.root}: all {len(found.skipped)} skipped"
        )
    dataset = LabelledImages(found.pairs, found.class_map, image_size, flip=train)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        # A last batch of one image breaks BatchNorm in training mode.
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def _summary(history, steps, images, seconds, train_set, val_set, out) -> dict:
    last = history[-1]
    metrics = {
        "checkpoint": str(out),
        "epochs": len(history),
        "steps": steps,
        "train_images": len(train_set.pairs),
        "skipped": len(train_set.skipped) + (len(val_set.skipped) if val_set else 0),
        "images_per_s": images / seconds if seconds > 0 else math.nan,
        "first_epoch_loss": history[0]["train_loss"],
        "train_loss": last["train_loss"],
        "history": history,
    }
    for key in ("val_miou", "val_pixel_acc", "val_iou"):
        if key in last:
            metrics[key] = last[key]
    return metrics


def _save(model, arch, encoder, train_set, image_size, metrics, out) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = SegCheckpoint(
        arch=arch, encoder=encoder, num_classes=NUM_CATEGORIES, class_map=train_set.class_map.name,
        image_size=tuple(image_size), state_dict=state, metrics=metrics,
    )
    save_checkpoint(ckpt, out)


def _epoch_line(record: dict) -> str:
    line = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    if "val_miou" in record:
        line += f", val mIoU {record['val_miou']:.3f}, pixel acc {record['val_pixel_acc']:.3f}"
    return line
