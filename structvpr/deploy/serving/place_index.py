"""A place index: the descriptors of a database split in a FAISS index, with each image's key and coordinates.

The folder `structvpr index build` writes, and logs beside the model as `place_index/`:
  index.faiss  FAISS IndexFlatIP of the L2-normalised descriptors (FAISS's own format, nothing pickled)
  places.csv   row i of the index: key, utm_east, utm_north, condition
  index.json   what it was built from: the model (reference and weights digest), the shards, the split
A model serves only an index built with its own weights: another model's descriptors would rank at random.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # before the import: it logs every CPU feature it probes
import faiss  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from structvpr.platform.store.checkpoint import ModelSourceError  # noqa: E402

FILES = {"index": "index.faiss", "places": "places.csv", "info": "index.json"}
PLACE_COLUMNS = ("key", "utm_east", "utm_north", "condition")
ARTIFACT_NAME = "place_index"


class PlaceIndexError(ModelSourceError):
    """An index that cannot be read, or that does not belong to the model."""


@dataclass
class PlaceIndex:
    index: faiss.Index
    places: list[dict]  # row i of the index: key, utm_east, utm_north, condition
    info: dict

    def search(self, descriptors: np.ndarray, k: int) -> list[list[dict]]:
        """The k nearest places of each descriptor, best first, with their cosine similarity as score."""
        k = max(1, min(int(k), self.index.ntotal))
        scores, rows = self.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)
        return [[{**self.places[r], "score": round(float(s), 6)} for s, r in zip(s_row, r_row) if r >= 0]
                for s_row, r_row in zip(scores, rows)]

    def check_model(self, model: nn.Module, source: str) -> None:
        digest = weights_digest(model)
        if self.info.get("model_digest") != digest:
            raise PlaceIndexError(f"the place index at {source} was built with another model "
                                  f"({self.info.get('model', '?')}); build one for this model with "
                                  "`structvpr index build --model <this model> --shards DIR`")


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's tensors by name: the same for a checkpoint and its logged copy."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_place_index(model: nn.Module, model_ref: str, shard_dir: str, split: str, progress: bool = True) -> PlaceIndex:
    """Encode the database images of `split` and index them."""
    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.evaluation.encode import encode_split

    encoded = encode_split(model, shard_dir, split, "database", "cpu", progress=progress)
    index = faiss.IndexFlatIP(encoded.descriptors.shape[1])
    index.add(np.ascontiguousarray(encoded.descriptors, dtype=np.float32))
    places = [{"key": key, "utm_east": float(e), "utm_north": float(n), "condition": c}
              for key, (e, n), c in zip(encoded.keys, encoded.utm, encoded.conditions)]
    info = {"model": model_ref, "model_digest": weights_digest(model), "dim": int(index.d), "shards": str(shard_dir),
            "manifest_hash": Manifest.load(shard_dir).hash, "split": split, "role": "database", "places": len(places),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return PlaceIndex(index, places, info)


def write_place_index(place_index: PlaceIndex, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(place_index.index, str(folder / FILES["index"]))
    with open(folder / FILES["places"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PLACE_COLUMNS)
        writer.writeheader()
        writer.writerows(place_index.places)
    (folder / FILES["info"]).write_text(json.dumps(place_index.info, indent=1))
    return folder


def read_place_index(folder: str | Path) -> PlaceIndex:
    """The index in `folder`, checked: every file there and readable, one place per indexed vector."""
    folder = Path(folder)
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise PlaceIndexError(f"{folder} is not a place index: no {', '.join(missing)}; "
                              "build one with `structvpr index build --model M --shards DIR`")
    try:
        info = json.loads((folder / FILES["info"]).read_text())
        index = faiss.read_index(str(folder / FILES["index"]))
        with open(folder / FILES["places"], newline="") as f:
            places = [_place(row) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # faiss raises RuntimeError for a bad file
        raise PlaceIndexError(f"the place index at {folder} is unreadable ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); build it again") from None
    if index.ntotal != len(places) or not isinstance(info, dict):
        raise PlaceIndexError(f"the place index at {folder} holds {index.ntotal} vectors but {len(places)} places "
                              f"in {FILES['places']}; build it again")
    return PlaceIndex(index, places, info)


def _place(row: dict) -> dict:
    return {"key": row["key"], "utm_east": float(row["utm_east"]), "utm_north": float(row["utm_north"]),
            "condition": row["condition"]}


def fetch_place_index(ref: str, folder: str | Path) -> Path:
    """A local folder of the index named by `ref`: a folder, or an MLflow artifact URI (runs:/<id>/place_index)."""
    if "://" not in ref and not ref.startswith(("runs:/", "models:/")):
        return Path(ref).expanduser()
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(folder)))
    except Exception as exc:  # MLflow raises many types for a bad URI or a missing artifact; all mean the same here
        raise PlaceIndexError(f"cannot fetch the place index {ref} from MLflow at {mlflow.get_tracking_uri()}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def load_place_index(ref: str, model: nn.Module) -> PlaceIndex:
    """The index named by `ref` (a folder or runs:/<id>/place_index), checked to belong to `model`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        index = read_place_index(fetch_place_index(ref, tmp))
    index.check_model(model, ref)
    return index
