"""Labelled segmentation data: list (image, label) pairs from the VG label layout or Cityscapes gtFine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from structvpr.datasets.class_maps import CATEGORIES, ClassMap, available_class_maps, load_class_map
from structvpr.datasets.records import SPLITS, DatasetError, Skip, reading

LAYOUTS = ("vg", "cityscapes")
VG_ROLE_DIRS = ("database", "queries")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CITYSCAPES_IMAGE = "_leftImg8bit.png"
CITYSCAPES_LABEL = "_gtFine_labelIds.png"


@dataclass(frozen=True)
class LabelledPair:
    image: str
    label: str


@dataclass
class LabelledSet:
    """One split of labelled data: the usable pairs, what was skipped, and how to read the labels."""

    root: str
    split: str
    layout: str
    class_map: ClassMap
    pairs: list[LabelledPair] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"labelled data {root} does not exist or is not a folder; check --data")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "vg"
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    raise DatasetError(
        f"{root} holds no labelled data: expected images/ + labels/ (VG layout) "
        "or leftImg8bit/ + gtFine/ (Cityscapes layout)"
    )


def labelled_splits(root: str | Path) -> list[str]:
    """Splits that have both images and labels."""
    root = Path(root)
    image_dir, label_dir = ("images", "labels") if detect_layout(root) == "vg" else ("leftImg8bit", "gtFine")
    return [s for s in SPLITS if (root / image_dir / s).is_dir() and (root / label_dir / s).is_dir()]


def list_labelled(root: str | Path, split: str) -> LabelledSet:
    """Pair every image of a split with its label; an image without a label is a counted Skip."""
    root = Path(root)
    layout = detect_layout(root)
    present = labelled_splits(root)
    if split not in present:
        raise DatasetError(
            f"split {split!r} not found under {root} ({layout} layout); splits present: {present or 'none'}"
        )
    if layout == "vg":
        found = LabelledSet(str(root), split, layout, _vg_class_map(root))
        candidates = _vg_candidates(root, split)
    else:
        found = LabelledSet(str(root), split, layout, load_class_map("cityscapes34"))
        candidates = _cityscapes_candidates(root, split)
    if not candidates:
        raise DatasetError(f"no images in split {split!r} under {root} ({layout} layout)")
    for image, label in candidates:
        if label.is_file():
            found.pairs.append(LabelledPair(str(image), str(label)))
        else:
            found.skipped.append(Skip(str(image), f"no label file {label}"))
    return found


def _vg_candidates(root: Path, split: str) -> list[tuple[Path, Path]]:
    out = []
    for role in VG_ROLE_DIRS:
        folder = root / "images" / split / role
        if folder.is_dir():
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            out += [(p, root / "labels" / split / role / f"{p.stem}.png") for p in images]
    return out


def _cityscapes_candidates(root: Path, split: str) -> list[tuple[Path, Path]]:
    images = sorted((root / "leftImg8bit" / split).glob(f"*/*{CITYSCAPES_IMAGE}"))
    label_dir = root / "gtFine" / split
    return [
        (p, label_dir / p.parent.name / p.name.replace(CITYSCAPES_IMAGE, CITYSCAPES_LABEL)) for p in images
    ]


def _vg_class_map(root: Path) -> ClassMap:
    """Labels in the VG layout are category ids; classes.json may name another built-in map."""
    path = root / "labels" / "classes.json"
    if not path.is_file():
        return load_class_map("categories")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    named = doc.get("class_map") if isinstance(doc, dict) else None
    if named:
        return load_class_map(named)
    if _category_names(doc) != CATEGORIES:
        raise DatasetError(
            f"{path} declares classes {_category_names(doc)}; labels must hold the category ids {CATEGORIES} "
            f"or classes.json must name a class map ('class_map': one of {available_class_maps()})"
        )
    return load_class_map("categories")


def _category_names(doc) -> dict[int, str]:
    # Accept {"categories": ...}, {id: name} or [name, ...]: writers differ in taste, not meaning.
    if isinstance(doc, dict) and "categories" in doc:
        doc = doc["categories"]
    if isinstance(doc, list):
        return dict(enumerate(str(n) for n in doc))
    if isinstance(doc, dict):
        try:
            return {int(k): str(v) for k, v in doc.items()}
        except ValueError:
            return {int(v): str(k) for k, v in doc.items()}  # {name: id}
    return {}


def read_pair(pair: LabelledPair, class_map: ClassMap) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and its category map uint8 (H, W); bad images and labels raise naming the file."""
    with reading(f"the image {pair.image}"), Image.open(pair.image) as im:
        rgb = np.asarray(im.convert("RGB"))
    with reading(f"the label {pair.label}"), Image.open(pair.label) as lab:
        if lab.mode not in ("L", "P"):
            raise DatasetError(f"label {pair.label} has mode {lab.mode}; labels are single-channel uint8 PNGs")
        if lab.size != (rgb.shape[1], rgb.shape[0]):
            raise DatasetError(
                f"label {pair.label} is {lab.size[0]}x{lab.size[1]} but its image {pair.image} is "
                f"{rgb.shape[1]}x{rgb.shape[0]}; labels must match their image's size"
            )
        ids = np.asarray(lab)
    unknown = class_map.unknown_ids(ids)
    if unknown:
        raise DatasetError(
            f"label {pair.label} holds ids {unknown[:10]} that class map {class_map.name!r} does not name; "
            "wrong class map for this data?"
        )
    return rgb, class_map.apply(ids)
