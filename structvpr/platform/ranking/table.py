"""The ranks table: the out-of-fold teacher's verdict on every stored training view, as a CSV file.

One row per training view: its place sample's key, place label, view index and condition, the fold
it was held out in, r_T (rank of its true positive among the whole training gallery, itself
excluded, 1 = best, under a teacher that never saw its place), the similarity of that positive and
of the hardest negative, and which view that negative is (the teacher's top wrong retrieval). A
first comment line names the shard set (manifest hash) the ranks belong to: a table from other
shards is refused. CSV because a person opens it; it is parsed as data, never executed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from structvpr.datasets.records import DatasetError
from structvpr.files import write_text_atomic

FILE_NAME = "ranks.csv"
FOLDS_FILE = "folds.json"  # beside the table: the fold teachers (checkpoints and logged models), fold i at index i
ARTIFACT_DIR = "ranks"  # the folder of the teacher run's artifacts that holds FILE_NAME and its plots
MANIFEST_TAG = "structvpr.ranks_manifest"  # run tag: the manifest hash the table belongs to
HEADER = "# manifest_sha256="


@dataclass(frozen=True)
class RankRow:
    key: str
    place: int
    view: int
    condition: str
    fold: int
    r_t: int
    sim_pos: float
    sim_neg: float
    top_key: str  # the hardest negative: place sample key and view
    top_view: int


COLUMNS = tuple(f.name for f in fields(RankRow))
TYPES = tuple(f.type for f in fields(RankRow))


@dataclass
class RanksTable:
    manifest_hash: str
    rows: list[RankRow]

    def __len__(self) -> int:
        return len(self.rows)

    def rank_of(self) -> dict[tuple[int, int], int]:
        """(place, view) -> r_T."""
        return {(r.place, r.view): r.r_t for r in self.rows}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        buffer = io.StringIO()
        buffer.write(f"{HEADER}{self.manifest_hash}\n")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in astuple(row)])
        return write_text_atomic(path, buffer.getvalue())  # a resumed ranking trusts a fold's file it finds

    @classmethod
    def read(cls, path: str | Path, source: str | None = None) -> "RanksTable":
        """The table in `path`; a DatasetError naming the file (or `source`) and the line for anything malformed."""
        name = source or str(path)
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read the ranks table {name}: {exc}") from None
        first, _, body = text.partition("\n")
        if not first.startswith(HEADER):
            raise DatasetError(f"{name} is not a ranks table: its first line must be '{HEADER}...'")
        lines = list(csv.reader(io.StringIO(body)))
        if not lines or tuple(lines[0]) != COLUMNS:
            raise DatasetError(f"{name}: the header must be {','.join(COLUMNS)}")
        return cls(first[len(HEADER):].strip(), [_parse(line, name, n) for n, line in enumerate(lines[1:], start=3)])

    def check_fits(self, manifest_hash: str, views: list[tuple[int, int]], source: str) -> None:
        """Refuse a table of other shards, or one without a row for some training view."""
        if self.manifest_hash != manifest_hash:
            raise DatasetError(f"the ranks table {source} belongs to other shards (manifest {self.manifest_hash[:12]}, "
                               f"these shards {manifest_hash[:12]}); rank with a teacher trained on these shards "
                               "(`structvpr train teacher ... folds=K`)")
        have = {(r.place, r.view) for r in self.rows}
        missing = [v for v in views if v not in have]
        if missing:
            raise DatasetError(f"the ranks table {source} has no row for {len(missing)} of {len(views)} training views "
                               f"(first: place {missing[0][0]}, view {missing[0][1]}); rank again with "
                               "`structvpr train teacher ... folds=K`")


def _parse(line: list[str], source: str, number: int) -> RankRow:
    try:
        if len(line) != len(COLUMNS):
            raise ValueError
        row = RankRow(*(_value(t, v) for t, v in zip(TYPES, line)))
    except ValueError:
        raise DatasetError(f"{source}, line {number}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}) "
                           f"with numbers where numbers go, got {','.join(line)[:120]!r}") from None
    if row.r_t < 1:
        raise DatasetError(f"{source}, line {number}: r_t must be >= 1, got {row.r_t}")
    return row


def _value(type_name, text: str):
    return {"int": int, "float": float}.get(type_name if isinstance(type_name, str) else type_name.__name__, str)(text)
