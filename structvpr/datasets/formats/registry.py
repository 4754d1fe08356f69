"""The registry of format readers: each reader module registers its reader here by name."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from structvpr.datasets.records import Listing


class FormatReader(Protocol):
    name: str

    def splits(self, root: Path) -> list[str]: ...

    def read(self, root: Path, split: str) -> Listing: ...


FORMATS: dict[str, FormatReader] = {}


def register(reader: FormatReader) -> FormatReader:
    FORMATS[reader.name] = reader
    return reader
