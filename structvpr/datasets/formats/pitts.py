"""Reader of Pittsburgh 30k/250k: NetVLAD's dbStruct .mat splits, listing image paths and UTM per image.

Confirmed against public code:
- Nanne/pytorch-NetVlad pittsburgh.py: split files ROOT/datasets/pitts30k_{train,val,test}.mat and
  pitts250k_*.mat; `loadmat(path)['dbStruct'].item()` read by position as whichSet, dbImage,
  utmDb (2 x N, transposed), qImage, utmQ, numDb, numQ, posDistThr, posDistSqThr,
  nonTrivPosDistSqThr; database paths joined to ROOT, query paths to ROOT/queries_real.
- The struct's field names as loadmat prints them (public scripts that index by name agree):
  whichSet, dbImageFns, utmDb, qImageFns, utmQ, numImages, numQueries, posDistThr, posDistSqThr,
  nonTrivPosDistSqThr. We read by name and also accept dbImage/qImage.
- gmberton/VPR-datasets-downloader format_pitts30k.py: raw ROOT holds 000..006, queries_real and
  datasets/. Relja's NetVLAD MATLAB (dbPitts.m) uses ROOT/images/ and ROOT/queries/ instead.
  Both image-root variants are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from structvpr.datasets.formats.registry import register
from structvpr.datasets.formats._common import absolute, collect, finite_utm
from structvpr.datasets.records import SPLITS, DatasetError, ImageRecord, Listing, Skip

STRUCT_FOLDERS = ("datasets", ".")
IMAGE_ROOTS = {"database": (".", "images"), "query": ("queries_real", "queries")}
NAME_FIELDS = {"database": ("dbImageFns", "dbImage"), "query": ("qImageFns", "qImage")}
UTM_FIELDS = {"database": ("utmDb",), "query": ("utmQ",)}


@dataclass(frozen=True)
class DbStruct:
    """What a reader needs from one dbStruct: relative image paths and N x 2 UTM per role."""

    names: dict[str, list[str]]
    utm: dict[str, np.ndarray]


class PittsReader:
    def __init__(self, name: str, variants: tuple[str, ...]):
        self.name = name
        self.variants = variants  # file-name prefixes, in order of preference

    def splits(self, root: Path) -> list[str]:
        return [s for s in SPLITS if self.struct_file(Path(root), s) is not None]

    def struct_file(self, root: Path, split: str) -> Path | None:
        candidates = (root / folder / f"{v}_{split}.mat" for v in self.variants for folder in STRUCT_FOLDERS)
        return next((p for p in candidates if p.is_file()), None)

    def read(self, root: Path, split: str) -> Listing:
        root = Path(root)
        path = self.struct_file(root, split)
        if path is None:
            raise DatasetError(
                f"no {'/'.join(f'{v}_{split}.mat' for v in self.variants)} in {root / 'datasets'} or {root}"
            )
        struct = load_db_struct(path)
        return collect(
            _entry(root, rel, utm, split, role, self.name)
            for role in ("database", "query")
            for rel, utm in zip(struct.names[role], struct.utm[role])
        )


def load_db_struct(path: Path, **loadmat_options) -> DbStruct:
    """Read a dbStruct .mat; any loadmat options (squeeze_me, struct_as_record) give the same result."""
    try:
        mat = scipy.io.loadmat(path, **loadmat_options)
    except Exception as err:  # scipy raises ValueError, TypeError, NotImplementedError (v7.3 files) and more
        raise DatasetError(f"cannot read {path} as a MATLAB v5 .mat file: {err}") from err
    if "dbStruct" not in mat:
        variables = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path} has no 'dbStruct' variable; it has {variables}")
    struct = _as_struct(mat["dbStruct"])
    names = {role: _strings(_field(struct, NAME_FIELDS[role], path)) for role in NAME_FIELDS}
    utm = {role: _utm_rows(_field(struct, UTM_FIELDS[role], path), path) for role in UTM_FIELDS}
    for role in names:
        if len(names[role]) != len(utm[role]):
            raise DatasetError(f"{path}: {len(names[role])} {role} images but {len(utm[role])} UTM positions")
    return DbStruct(names, utm)


def _unwrap(value):
    # Without squeeze_me, loadmat wraps every struct and cell value in 1x1 object arrays.
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _as_struct(value):
    value = _unwrap(value)
    if isinstance(value, np.ndarray) and value.dtype.names and value.size == 1:
        return value.reshape(-1)[0]  # record arrays (struct_as_record=True) -> one np.void
    return value  # np.void already, or scipy's mat_struct (struct_as_record=False)


def _field(struct, names: tuple[str, ...], path: Path):
    if isinstance(struct, np.void):
        present = struct.dtype.names or ()
        get = struct.__getitem__
    else:
        present = getattr(struct, "_fieldnames", ())
        get = lambda n: getattr(struct, n)  # noqa: E731
    for name in names:
        if name in present:
            return get(name)
    raise DatasetError(f"{path}: dbStruct lacks field {' or '.join(names)}; it has {list(present)}")


def _strings(value) -> list[str]:
    """A MATLAB cell array of strings, in any loadmat shape, as a flat list."""
    if isinstance(value, (str, bytes)):
        return [value.decode() if isinstance(value, bytes) else str(value)]
    array = np.asarray(value)
    if array.dtype.kind in "US":
        return [str(s) for s in array.reshape(-1)]
    return [s for item in array.reshape(-1) for s in _strings(item)]


def _utm_rows(value, path: Path) -> np.ndarray:
    array = np.asarray(_unwrap(value), dtype=float)
    if array.ndim == 1 and array.size == 2:
        array = array.reshape(2, 1)  # one image, squeezed
    if array.ndim == 2 and array.shape[0] == 2:
        return array.T  # MATLAB stores 2 x N
    if array.ndim == 2 and array.shape[1] == 2:
        return array
    if array.size == 0:
        return np.zeros((0, 2))
    raise DatasetError(f"{path}: UTM array of shape {array.shape}, expected 2 x N")


def _entry(root: Path, rel: str, utm: np.ndarray, split: str, role: str, source: str) -> ImageRecord | Skip:
    candidates = [root / base / rel for base in IMAGE_ROOTS[role]]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        reason = f"image file missing; looked for it under {IMAGE_ROOTS[role]} of {root}"
        return Skip(absolute(candidates[0]), reason, "missing_image")
    east, north = float(utm[0]), float(utm[1])
    if not finite_utm(east, north):
        return Skip(absolute(path), f"non-finite UTM in the dbStruct: {east}, {north}", "bad_coordinates")
    return ImageRecord(
        path=absolute(path),
        name=path.name,
        split=split,
        role=role,
        utm_east=east,
        utm_north=north,
        source=source,
    )


register(PittsReader("pitts", ("pitts30k", "pitts250k")))
# The same reader preferring the 250k lists, for roots that hold both.
register(PittsReader("pitts250k", ("pitts250k",)))
