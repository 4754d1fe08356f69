"""The common record every format reader produces: one image, where it is, what role it plays."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
ROLES = ("database", "query")


class DatasetError(ValueError):
    """Input that cannot be used as a whole (missing split, empty folder, bad layout).

    The message names the file or folder and says what to do.
    """


def file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists and is not a folder: where creating `folder` would fail."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


@contextmanager
def reading(what: str):
    """An OS error while reading `what` (a dataset, a folder of labels) becomes a DatasetError naming the path.

    Root ignores file modes, but the error is real for everyone else (and on NFS or FUSE for root too).
    """
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename} (in {what})" if exc.filename and str(exc.filename) not in what else what
        raise DatasetError(
            f"cannot read {where}: {exc.strerror or exc}; check that it exists, is what the layout expects "
            "there, and can be read by the user running structvpr"
        ) from None


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset, as the shard builder needs it."""

    path: str  # absolute path of the RGB image
    name: str  # original file name (VPR names carry decimal UTM: never used as a shard key)
    split: str  # train | val | test
    role: str  # database | query
    utm_east: float
    utm_north: float
    place_id: str | None = None  # dataset-given place; None where places come from clustering UTM
    condition: str = ""  # day, night, winter, ... where the dataset says
    heading: float | None = None  # degrees, where known
    label_path: str | None = None  # ground-truth category map (uint8 PNG), where the dataset has one
    source: str = ""  # format name: vg, msls, gsv, pitts

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r} for {self.path}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r} for {self.path}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Skip:
    """An input left out, with the reason: skips are data, counted in the manifest, never silent."""

    path: str
    reason: str  # a sentence saying what is wrong and what to do
    kind: str = ""  # a short code to count skips by (unreadable_image, bad_name, missing_label, ...)

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "kind": self.kind or "other"}


@dataclass
class Listing:
    """What a format reader found in one split: usable records and the inputs it skipped."""

    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def extend(self, other: "Listing") -> None:
        self.records.extend(other.records)
        self.skipped.extend(other.skipped)
