"""Finding what a student reads of its teacher's folds: the ranks table (kd.ranks=out_of_fold) and the fold
teachers (kd.teacher_source=folds), checked against the student's shards before training.

Both belong to a teacher: `kd.teacher_ranks` names one (or a ranks.csv file), else the student's own
`teacher`. Where they live follows from the reference: a checkpoint's run folder, the `ranks/`
artifacts of an MLflow run, or the run behind a registered model version.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.ranking.folds import training_views
from structvpr.platform.ranking.table import ARTIFACT_DIR, FILE_NAME, FOLDS_FILE, RanksTable
from structvpr.platform.recipe import Recipe
from structvpr.platform.store.checkpoint import ModelSourceError

NO_TABLE_HINT = "train the teacher with `structvpr train teacher ... folds=K`, or name a table with kd.teacher_ranks=..."


def ranks_for_student(recipe: Recipe, manifest: Manifest) -> RanksTable:
    """The table the student reads, checked against its shards: same manifest, a row for every training view."""
    ref = recipe.kd.teacher_ranks or recipe.teacher
    with located(ref, FILE_NAME, recipe.tracking.uri) as (path, source):
        table = RanksTable.read(path, source)
    table.check_fits(manifest.hash, [(v.place, v.view) for v in training_views(manifest)], ref)
    return table


def fold_teachers_for_student(recipe: Recipe, manifest: Manifest) -> list[str]:
    """References of the fold teachers (fold i at index i), for KD targets from the teacher that never saw a place."""
    ref = recipe.kd.teacher_ranks or recipe.teacher
    with located(ref, FOLDS_FILE, recipe.tracking.uri) as (path, source):
        try:
            folds = json.loads(Path(path).read_text())
            refs = _usable_refs(folds)
        except (OSError, ValueError, KeyError, TypeError):
            raise ModelSourceError(f"{source} is not a fold list written by `structvpr train teacher ... folds=K`") from None
    if folds.get("manifest_sha256") != manifest.hash:
        raise ModelSourceError(f"the fold teachers of {ref} were trained on other shards; train them on these")
    return refs


def _usable_refs(folds: dict) -> list[str]:
    """Checkpoints where this machine (or the cluster's shared storage) sees them, else the fold runs' models."""
    checkpoints = [str(c) for c in folds["checkpoints"]]
    return checkpoints if all(Path(c).exists() for c in checkpoints) else [str(m) for m in folds["models"]]


@contextlib.contextmanager
def located(ref: str, name: str, tracking_uri: str = ""):
    """(local path, name for messages) of the file `name` that belongs to the teacher `ref`."""
    if ref.startswith(("runs:/", "models:/")):
        with tempfile.TemporaryDirectory() as tmp:
            yield _download(ref, name, tracking_uri, tmp), f"{ref} ({ARTIFACT_DIR}/{name})"
    else:
        path = _beside_checkpoint(Path(ref).expanduser(), ref, name)
        yield path, str(path)


def _beside_checkpoint(path: Path, ref: str, name: str) -> Path:
    """A file named directly (a ranks.csv), or `name` in the run folder of a checkpoint (folder or state file)."""
    if name == FILE_NAME and path.suffix == ".csv":
        if not path.is_file():
            raise ModelSourceError(f"the ranks table {ref} does not exist")
        return path
    folders = (path.parent,) if path.suffix == ".csv" else (path, path.parent, path.parent.parent)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise ModelSourceError(f"the teacher {ref} has no {name} in its run folder; {NO_TABLE_HINT}")


def _download(ref: str, name: str, tracking_uri: str, folder: str) -> str:
    import mlflow

    from structvpr.platform.store.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    run_id = _run_of(ref)
    try:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_DIR}/{name}", dst_path=folder)
    except Exception:  # MLflow raises several types for a missing artifact; all mean "not there"
        raise ModelSourceError(f"the teacher {ref} (MLflow run {run_id}) has no {ARTIFACT_DIR}/{name}; "
                               f"{NO_TABLE_HINT}") from None


def _run_of(ref: str) -> str:
    """The MLflow run id behind runs:/<id>/... or models:/<name>/<version> | models:/<name>@<alias>."""
    if ref.startswith("runs:/"):
        return ref.removeprefix("runs:/").split("/", 1)[0]
    import mlflow

    from structvpr.platform.store.tracking import client

    name_and_version = ref.removeprefix("models:/").rstrip("/")
    try:
        c = client(mlflow.get_tracking_uri())
        if "@" in name_and_version:
            name, alias = name_and_version.split("@", 1)
            return c.get_model_version_by_alias(name, alias).run_id
        name, version = name_and_version.rsplit("/", 1)
        return c.get_model_version(name, version).run_id
    except Exception as exc:  # an unknown model, version or alias
        raise ModelSourceError(f"cannot resolve {ref} in the model registry: {str(exc).splitlines()[0]}") from None
