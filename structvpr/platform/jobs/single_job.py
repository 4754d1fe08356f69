"""One training job on the driver: check its inputs, start Ray Train, then log and register.

Everything that can be checked without Ray is checked first (recipe keys and
types, shards, the eval shards and their val split, teacher), so a mistake fails in a second, not after
a cluster has started. A finished job (its DONE_FILE written) is not run again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from structvpr.config import flatten, load_config
from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.jobs.job_kind import job_kind
from structvpr.platform.recipe import Recipe, name_settings
from structvpr.platform.store.references import check_fits_shards, load_branch
from structvpr.platform.store.tracking import finish_if_left_running, resolve_tracking_uri, start_or_resume_run

DONE_FILE = "structvpr_done.json"


def load_recipe(kind: str, config: str | None, overrides: list[str]) -> Recipe:
    return load_config(Recipe, config, [f"kind={kind}", *overrides])


def check_inputs(recipe: Recipe) -> Manifest:
    """The manifest of usable shards; clear errors for missing shards, eval shards without the eval split or
    unlike the training shards, or a teacher that does not fit."""
    manifest = Manifest.load(recipe.data.shards)
    manifest.shard_paths("train", "places")
    check_eval_shards(recipe, manifest)
    if job_kind(recipe).uses_teacher:
        teacher, trained_on = load_branch(recipe.teacher)
        check_fits_shards(teacher, trained_on, manifest, "teacher")
    return manifest


def check_eval_shards(recipe: Recipe, manifest: Manifest) -> Manifest:
    """The manifest of the shards evaluated each epoch and after training (eval.shards, else data.shards)."""
    if not recipe.eval.shards:
        check_eval_split(recipe, manifest, recipe.data.shards,
                         "build shards with a {split} split, or set eval.shards=DIR to evaluate on other shards")
        return manifest
    where = f"eval.shards {recipe.eval.shards}"
    try:
        evaluated = Manifest.load(recipe.eval.shards)
    except DatasetError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    check_eval_split(recipe, evaluated, where, "build the eval shards with a {split} split, or set eval.split")
    if evaluated.image_size != manifest.image_size:
        (w, h), (tw, th) = evaluated.image_size, manifest.image_size
        raise DatasetError(f"{where} are {w}x{h} but data.shards {recipe.data.shards} are {tw}x{th}: a model is "
                           f"evaluated at the size it trains at; build the eval shards with --size {tw}x{th}")
    if evaluated.num_categories != manifest.num_categories:
        raise DatasetError(f"{where} hold {evaluated.num_categories} segmentation categories but data.shards "
                           f"{recipe.data.shards} hold {manifest.num_categories}: a teacher reads one channel per "
                           "category; build both with the same class map")
    return evaluated


def check_eval_split(recipe: Recipe, manifest: Manifest, where: str, remedy: str) -> None:
    """Evaluation ranks queries against a database: the eval split must hold both."""
    split = recipe.eval.split
    for role in ("database", "queries"):
        try:
            manifest.shard_paths(split, role)
        except DatasetError:
            raise DatasetError(f"the {split} set in {where} has no {role} images: evaluation needs both; "
                               + remedy.format(split=split)) from None


def run_name(recipe: Recipe) -> str:
    """A stable name: the same recipe resumes the same run; a changed recipe starts a new one.

    `folds` and `fold_block_m` are left out: they add fold teachers beside the full teacher but do not change
    it, so a teacher trained without folds is reused when the same recipe is run again with folds=K. An empty
    eval.shards is left out too (name_settings), so runs named before that key existed keep their names."""
    if recipe.run.name:
        return recipe.run.name
    settings = name_settings(recipe)
    settings["run"] = {}
    for key in ("folds", "fold_block_m"):
        settings.pop(key)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{recipe.kind}-{digest}"


def absolute_paths(recipe: Recipe) -> Recipe:
    """Workers may run in other folders (ray job submit): hand them absolute paths."""
    recipe.data.shards = str(Path(recipe.data.shards).resolve())
    if recipe.eval.shards:
        recipe.eval.shards = str(Path(recipe.eval.shards).resolve())
    recipe.run.storage_path = str(Path(recipe.run.storage_path).resolve()) if "://" not in recipe.run.storage_path else recipe.run.storage_path
    if recipe.teacher and not recipe.teacher.startswith(("runs:/", "models:/")):
        recipe.teacher = str(Path(recipe.teacher).resolve())
    if recipe.kd.teacher_ranks and not recipe.kd.teacher_ranks.startswith(("runs:/", "models:/")):
        recipe.kd.teacher_ranks = str(Path(recipe.kd.teacher_ranks).resolve())
    return recipe


def done_file(recipe: Recipe) -> Path:
    """Where a finished job keeps its summary: while it exists, the same recipe is not trained again."""
    return Path(recipe.run.storage_path) / run_name(recipe) / DONE_FILE


def train_job(recipe: Recipe, manifest: Manifest, progress: bool = True, worker_inputs: dict | None = None,
              tags: dict | None = None) -> dict:
    """One Ray Train job, its MLflow run and its registered model; a finished job is not run again."""
    name = run_name(recipe)
    done = done_file(recipe)
    if done.is_file():
        print(f"run {name} already finished; its summary is in {done} (set run.name=... to train again)")
        summary = json.loads(done.read_text())
        finish_if_left_running(resolve_tracking_uri(recipe.tracking.uri), summary["mlflow_run_id"])
        return summary
    from structvpr.platform.jobs.resources import check_cluster_fits
    from structvpr.runtime import ensure_ray

    ensure_ray()
    check_cluster_fits(recipe)  # before an MLflow run is opened for a job that could never start
    uri = resolve_tracking_uri(recipe.tracking.uri)
    run_id = start_or_resume_run(uri, recipe.tracking.experiment, name, flatten(asdict(recipe)),
                                 tags={"structvpr.kind": recipe.kind, "structvpr.train_manifest": manifest.hash,
                                       **(tags or {})})
    print(f"{recipe.kind} run {name}: MLflow run {run_id} at {uri}; checkpoints under {recipe.run.storage_path}/{name}")
    from structvpr.platform.jobs.ray_trainer import fit

    result = fit(recipe, name, run_id, uri, progress, worker_inputs or {})
    from structvpr.platform.jobs.finalize import finalize_run

    return finalize_run(recipe, name, run_id, uri, result, manifest, progress, done=done)
