"""Format readers: each turns one public dataset layout into ImageRecords, one split at a time.

A reader is an object with a `name`, `splits(root)` (the splits present) and
`read(root, split) -> Listing`. Readers register themselves in `registry.FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from structvpr.datasets.formats.registry import FORMATS, FormatReader
from structvpr.datasets.records import DatasetError, Listing, reading


def get_format(name: str) -> FormatReader:
    _load_builtin_readers()
    if name not in FORMATS:
        raise DatasetError(f"unknown dataset format {name!r}; choose one of {sorted(FORMATS)}")
    return FORMATS[name]


def splits_present(fmt: str, root: str | Path) -> list[str]:
    """The splits a dataset has; a folder that cannot be read is an error naming it."""
    with reading(f"the {fmt} dataset {root}"):
        return get_format(fmt).splits(Path(root))


def read_split(fmt: str, root: str | Path, split: str) -> Listing:
    """Read one split, failing clearly when the root or the split is missing or cannot be read."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    present = splits_present(fmt, root)
    if split not in present:
        raise DatasetError(
            f"split {split!r} not found under {root} (format {fmt}); splits present: {present or 'none'}"
        )
    with reading(f"split {split!r} of the {fmt} dataset {root}"):
        return get_format(fmt).read(root, split)


def _load_builtin_readers() -> None:
    # Imported here, not at module top, so that `formats` itself stays cheap to import.
    from structvpr.datasets.formats import gsv, msls, pitts, vg  # noqa: F401
