"""`structvpr index build` (a place index of a database split, logged beside the model) and `structvpr localize`."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from structvpr.deploy.serving.place_index import (
    ARTIFACT_NAME, FILES, PlaceIndexError, build_place_index, load_place_index, write_place_index,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CSV_COLUMNS = ("image", "rank", "key", "utm_east", "utm_north", "condition", "score", "error")


def run_index_build(model_ref: str, shards: str, split: str, out: str, overwrite: bool, log: bool,
                    progress: bool = True) -> int:
    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.store.references import check_fits_shards, load_branch

    folder = _output_folder(Path(out), overwrite)
    model, trained_on = load_branch(model_ref)
    check_fits_shards(model, trained_on, Manifest.load(shards), "model")
    place_index = build_place_index(model, model_ref, shards, split, progress)
    write_place_index(place_index, folder)
    print(f"place index of {place_index.index.ntotal} places ({split} database of {shards}, dim {place_index.index.d}): "
          f"{folder}")
    if log and model_ref.startswith(("runs:/", "models:/")):
        print(f"logged beside the model: {log_beside_model(model_ref, folder)}")
    return 0


def _output_folder(folder: Path, overwrite: bool) -> Path:
    """A new or empty folder, or one holding an index of ours when --overwrite says so; never anything else."""
    if folder.exists() and any(folder.iterdir()):
        ours = (folder / FILES["info"]).is_file() and {p.name for p in folder.iterdir()} <= set(FILES.values())
        if not ours:
            raise PlaceIndexError(f"--out {folder} exists and holds other files; choose an empty or new folder")
        if not overwrite:
            raise PlaceIndexError(f"--out {folder} holds a place index already; pass --overwrite to replace it")
    return folder


def log_beside_model(model_ref: str, folder: Path) -> str:
    """Log the index in the model's own run as place_index/, where the served model looks for it."""
    from structvpr.platform.store.tracking import client, resolve_tracking_uri

    c = client(resolve_tracking_uri(""))
    run_id = _run_of(model_ref, c)
    c.log_artifacts(run_id, str(folder), ARTIFACT_NAME)
    return f"runs:/{run_id}/{ARTIFACT_NAME}"


def _run_of(model_ref: str, c) -> str:
    if model_ref.startswith("runs:/"):
        return model_ref.removeprefix("runs:/").split("/")[0]
    name, _, version = model_ref.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        return c.get_model_version_by_alias(name, alias).run_id
    return c.get_model_version(name, version).run_id



def run_localize(model_ref: str, index_ref: str, inputs: list[str], top_k: int, out: str | None, fmt: str | None,
                 progress: bool = True) -> int:
    """Top-k places of every image; an unreadable image is a row with its error, counted, never dropped."""
    paths = image_paths(inputs)
    localizer = load_localizer(model_ref, index_ref)
    results = localize_paths(localizer, paths, top_k, progress)
    text = as_json(results) if output_format(out, fmt) == "json" else as_csv(results)
    if out:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
    failed = sum("error" in r for r in results)
    print(f"localized {len(paths) - failed} of {len(paths)} images"
          + (f"; {failed} unreadable (their 'error' says why)" if failed else "") + (f" -> {out}" if out else ""),
          file=sys.stderr)
    return 0 if failed < len(paths) else 1


def image_paths(inputs: list[str]) -> list[Path]:
    """The files named, and the images directly inside the folders named, in order."""
    paths = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            paths.append(path)
        else:
            raise PlaceIndexError(f"image {item} not found; give image files or folders of them")
    if not paths:
        raise PlaceIndexError(f"no images in {' '.join(inputs)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return paths


def load_localizer(model_ref: str, index_ref: str):
    from structvpr.deploy.serving.localizer import Localizer
    from structvpr.platform.store.references import load_branch

    model, trained_on = load_branch(model_ref)
    if not trained_on.get("image_size"):
        raise PlaceIndexError(f"{model_ref} does not record the image size it was trained at; retrain or re-register it")
    return Localizer(model, tuple(trained_on["image_size"]), load_place_index(index_ref, model))


def localize_paths(localizer, paths: list[Path], top_k: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    from structvpr.datasets.images import rgb_from_bytes

    results = [{"image": str(p)} for p in paths]
    decoded = []
    for result, path in zip(results, paths):
        try:
            decoded.append((result, rgb_from_bytes(path.read_bytes(), localizer.image_size)))
        except (OSError, ValueError) as exc:
            result["error"] = str(exc)
    step = localizer.max_batch
    for start in tqdm(range(0, len(decoded), step), desc="localize", unit="batch", disable=not progress, file=sys.stderr):
        batch = decoded[start:start + step]
        places = localizer.index.search(localizer.describe_images([image for _, image in batch]), top_k)
        for (result, _), found in zip(batch, places):
            result["places"] = found
    return results


def output_format(out: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    return "json" if out and Path(out).suffix.lower() == ".json" else "csv"


def as_json(results: list[dict]) -> str:
    return json.dumps(results, indent=1) + "\n"


def as_csv(results: list[dict]) -> str:
    """One row per image and rank; an unreadable image is one row with its error."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for result in results:
        if "error" in result:
            writer.writerow({"image": result["image"], "error": result["error"]})
        for rank, place in enumerate(result.get("places", []), 1):
            writer.writerow({"image": result["image"], "rank": rank, **place})
    return buf.getvalue()
