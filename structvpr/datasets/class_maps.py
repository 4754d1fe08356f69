"""Class maps: merge a segmentation dataset's or model's classes into the structural categories."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from structvpr.datasets.records import DatasetError

# The Cityscapes category level (catId): what labels, shards and the teacher use everywhere.
CATEGORIES: dict[int, str] = {
    0: "void", 1: "flat", 2: "construction", 3: "object", 4: "nature", 5: "sky", 6: "human", 7: "vehicle",
}
NUM_CATEGORIES = len(CATEGORIES)
VOID = 0

MAPS_DIR = Path(__file__).with_name("class_maps")


@dataclass(frozen=True)
class ClassMap:
    """A lookup from source ids (0..255) to category ids; ids the map does not name become void."""

    name: str
    categories: dict[int, str]
    mapping: dict[int, int]

    @cached_property
    def lookup(self) -> np.ndarray:
        lut = np.full(256, VOID, dtype=np.uint8)
        for src, dst in self.mapping.items():
            lut[src] = dst
        return lut

    @cached_property
    def known(self) -> np.ndarray:
        """Boolean mask of the 256 source ids this map names (to catch labels of another scheme)."""
        mask = np.zeros(256, dtype=bool)
        mask[list(self.mapping)] = True
        return mask

    def apply(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype != np.uint8:
            if not np.issubdtype(ids.dtype, np.integer):
                raise TypeError(f"class ids must be integers, got {ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() > 255):
                raise ValueError(f"class ids must lie in 0..255 for class map {self.name!r}")
        return self.lookup[ids]

    def unknown_ids(self, ids: np.ndarray) -> list[int]:
        """Source ids present in `ids` that the map does not name."""
        present = np.unique(np.asarray(ids))
        return [int(i) for i in present if not (0 <= i <= 255 and self.known[i])]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "categories": {str(k): v for k, v in self.categories.items()},
            "map": {str(k): v for k, v in sorted(self.mapping.items())},
        }


def available_class_maps() -> list[str]:
    return sorted(p.stem for p in MAPS_DIR.glob("*.yaml"))


def load_class_map(name_or_path: str | Path | ClassMap) -> ClassMap:
    """Load a built-in map by name (see available_class_maps) or a YAML file of the same form."""
    if isinstance(name_or_path, ClassMap):
        return name_or_path
    builtin = MAPS_DIR / f"{name_or_path}.yaml"
    if str(name_or_path) in available_class_maps():
        return _parse(yaml.safe_load(builtin.read_text()), builtin)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _parse(yaml.safe_load(path.read_text()), path)
    raise DatasetError(
        f"unknown class map {str(name_or_path)!r}: not a built-in map and not a YAML file; "
        f"built-in maps: {', '.join(available_class_maps())}"
    )


def _parse(doc: object, source: Path) -> ClassMap:
    if not isinstance(doc, dict) or not isinstance(doc.get("map"), dict):
        raise DatasetError(f"class map {source} must be a YAML mapping with 'name', 'categories' and 'map'")
    categories = {int(k): str(v) for k, v in (doc.get("categories") or CATEGORIES).items()}
    if categories != CATEGORIES:
        raise DatasetError(
            f"class map {source} declares categories {categories}; the project uses {CATEGORIES}"
        )
    mapping = {int(k): int(v) for k, v in doc["map"].items()}
    bad = {k: v for k, v in mapping.items() if not 0 <= k <= 255 or v not in CATEGORIES}
    if bad:
        raise DatasetError(f"class map {source}: source ids must be 0..255 and targets category ids; bad {bad}")
    return ClassMap(name=str(doc.get("name") or source.stem), categories=categories, mapping=mapping)
