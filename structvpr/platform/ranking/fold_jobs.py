"""`structvpr train teacher ... folds=K`: the fold teachers, their ranks, and the ranks table beside the full teacher.

Beside the full teacher (trained on every place, as without folds), K fold teachers are trained, each
a Ray Train job on the places outside its fold and their buffer (folds.py). The K + 1 jobs are
independent: as many run at once as the cluster holds; the rest queue. Each fold teacher then ranks
the views of its own fold in a Ray task with one worker's resources (table.py says what a row holds).
The merged table is logged to the full teacher's MLflow run (ranks/ranks.csv, with its plots), tagged
with the shard manifest hash, and named on the registered teacher version. Every step is resumable: a
finished fold job is not retrained (its run name is stable), a fold's ranks are kept in its run folder.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from structvpr.config import ConfigError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.files import write_text_atomic
from structvpr.platform.jobs.single_job import DONE_FILE, done_file, run_name, train_job
from structvpr.platform.ranking.folds import FoldPlan, TrainingView, plan_folds, training_views
from structvpr.platform.ranking.table import ARTIFACT_DIR, FILE_NAME, FOLDS_FILE, MANIFEST_TAG, RanksTable, RankRow
from structvpr.platform.recipe import Recipe

FOLD_RANKS_FILE = "ranks_fold.csv"  # one fold's rows, in the fold job's run folder
RANKS_REF_TAG = "structvpr.ranks"  # model version tag: where its ranks table is


@dataclass(frozen=True)
class PlannedFolds:
    views: list[TrainingView]
    plan: FoldPlan


def plan_for(recipe: Recipe, manifest: Manifest) -> PlannedFolds:
    """The recipe's folds over the manifest's training views; ConfigError if they cannot be made."""
    views = training_views(manifest)
    plan = plan_folds(views, recipe.folds, recipe.fold_block_m, recipe.eval.radius_m, recipe.train.seed)
    for fold, excluded in enumerate(plan.excluded):
        if len(excluded) >= len(plan.fold_of):
            raise ConfigError(f"fold {fold} with its {recipe.eval.radius_m:g} m buffer holds out every training "
                              f"place: use a larger fold_block_m or fewer folds (folds={recipe.folds})")
    return PlannedFolds(views, plan)


def fold_recipe(recipe: Recipe, fold: int) -> Recipe:
    """The full teacher's recipe, holding out one fold; unregistered (only the full teacher is a model version)."""
    r = copy.deepcopy(recipe)
    r.fold = fold
    r.run.name = f"{run_name(recipe)}-fold{fold}of{recipe.folds}-b{recipe.fold_block_m:g}"
    r.tracking.register = False
    return r


def train_with_folds(recipe: Recipe, manifest: Manifest, planned: PlannedFolds,
                     train_full: Callable[[bool], dict], progress: bool = True) -> dict:
    """The full teacher (`train_full(progress)`) and the fold teachers, as many at once as the cluster holds;
    once all are done, the ranks table goes to the full teacher's run. Its summary, with where the table is."""
    done = done_file(recipe)
    summary = json.loads(done.read_text()) if done.is_file() else {}
    if summary.get("ranks_table") and Path(summary["ranks_table"]).is_file():
        print(f"ranks table already written: {summary['ranks_table']}")
        return summary
    from structvpr.runtime import ensure_ray

    ensure_ray()
    at_once = jobs_at_once(recipe)
    print(f"the teacher and {recipe.folds} fold teachers over {planned.plan.num_blocks} blocks of "
          f"{recipe.fold_block_m:g} m, {at_once} at a time", flush=True)
    bars = progress and at_once == 1  # bars of jobs running at once would draw over each other
    with ThreadPoolExecutor(at_once) as pool:
        # A job that fails raises here, after the others have finished (the pool waits): they are kept.
        full = pool.submit(train_full, bars)
        folds = [pool.submit(train_and_rank_fold, recipe, manifest, planned, f, bars) for f in range(recipe.folds)]
        summary, folds = full.result(), [f.result() for f in folds]
    rows = sorted((row for part, _ in folds for row in part), key=lambda r: (r.place, r.view))
    fold_teachers = {"manifest_sha256": manifest.hash, "checkpoints": [s["checkpoint"] for _, s in folds],
                     "models": [f"runs:/{s['mlflow_run_id']}/model" for _, s in folds]}
    return publish(RanksTable(manifest.hash, rows), fold_teachers, recipe, summary)


def jobs_at_once(recipe: Recipe) -> int:
    """How many of the K + 1 teacher jobs the cluster holds at once (1 if it holds only one job's workers)."""
    from structvpr.platform.jobs.resources import jobs_fitting

    return min(recipe.folds + 1, jobs_fitting(recipe))


def train_and_rank_fold(recipe: Recipe, manifest: Manifest, planned: PlannedFolds, fold: int,
                        progress: bool) -> tuple[list[RankRow], dict]:
    """(the fold's rows of the table, the fold job's summary); a finished job or ranking is not redone."""
    r = fold_recipe(recipe, fold)
    held_out = planned.plan.held_out(fold)
    excluded = sorted(planned.plan.excluded[fold])
    print(f"fold {fold}: {len(held_out)} places held out, {len(excluded) - len(held_out)} more in the buffer", flush=True)
    fold_summary = train_job(r, manifest, progress, {"exclude_places": excluded},
                             tags={"structvpr.fold_of": run_name(recipe), "structvpr.fold": str(fold)})
    part = Path(r.run.storage_path) / r.run.name / FOLD_RANKS_FILE
    if part.is_file():
        return RanksTable.read(part).rows, fold_summary
    rows = rank_on_cluster(r, fold_summary["checkpoint"], planned, fold)
    RanksTable(manifest.hash, rows).write(part)
    print(f"fold {fold}: ranked {len(rows)} views", flush=True)
    return rows, fold_summary


def rank_on_cluster(recipe: Recipe, checkpoint: str, planned: PlannedFolds, fold: int) -> list[RankRow]:
    """rank_fold in a Ray task with one training worker's CPUs (and GPU): the driver may have neither."""
    import ray

    task = ray.remote(_rank_task).options(num_cpus=recipe.scaling.cpus_per_worker,
                                          num_gpus=1 if recipe.scaling.use_gpu else 0)
    return ray.get(task.remote(checkpoint, recipe.data.shards, planned.views, planned.plan.fold_of, fold,
                               recipe.scaling.use_gpu))


def _rank_task(checkpoint: str, shard_dir: str, views, fold_of, fold: int, use_gpu: bool) -> list[RankRow]:
    from structvpr.platform.ranking.rank import rank_fold
    from structvpr.platform.store.references import load_branch

    device = "cuda" if use_gpu else "cpu"
    model, _ = load_branch(checkpoint, device)
    return rank_fold(model, shard_dir, views, fold_of, fold, device)


def publish(table: RanksTable, fold_teachers: dict, recipe: Recipe, summary: dict) -> dict:
    """Log the table, its plots and the fold teachers' list to the full teacher's run, name the table on its
    model version, and keep copies in its run folder (the table last: it marks the ranking done)."""
    from structvpr.platform.ranking.plots import plot_noisiest, plot_rank_histogram
    from structvpr.platform.store.tracking import client, resolve_tracking_uri

    uri = resolve_tracking_uri(recipe.tracking.uri)
    run_id = summary["mlflow_run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table.write(folder / FILE_NAME)
        (folder / FOLDS_FILE).write_text(json.dumps(fold_teachers, indent=1))
        plot_rank_histogram(table, folder / "rank_histogram.png", recipe.kd.weighting.noisy_rank)
        plot_noisiest(table, recipe.data.shards, folder / "noisiest.png")
        client(uri).log_artifacts(run_id, str(folder), ARTIFACT_DIR)
    client(uri).set_tag(run_id, MANIFEST_TAG, table.manifest_hash)
    ref = f"runs:/{run_id}/{ARTIFACT_DIR}/{FILE_NAME}"
    if summary.get("registered_model"):
        from structvpr.platform.store.logged_model import REGISTERED_NAMES

        client(uri).set_model_version_tag(REGISTERED_NAMES["teacher"], str(summary["registered_model"]), RANKS_REF_TAG, ref)
    folder = Path(recipe.run.storage_path) / run_name(recipe)
    write_text_atomic(folder / FOLDS_FILE, json.dumps(fold_teachers, indent=1))
    summary = summary | {"ranks_table": str(table.write(folder / FILE_NAME)), "ranks_artifact": ref,
                         "ranks_summary": describe(table, recipe.kd.weighting.noisy_rank)}
    write_text_atomic(folder / DONE_FILE, json.dumps(summary, indent=1))
    print(f"ranks table: {summary['ranks_table']} (MLflow {ref})")
    return summary


def describe(table: RanksTable, noisy_rank: int) -> dict:
    """Share of views the teacher ranks first, and beyond noisy_rank, overall and per condition."""
    def shares(rows):
        n = max(1, len(rows))
        return {"views": len(rows), "r1": sum(r.r_t == 1 for r in rows) / n, "noisy": sum(r.r_t > noisy_rank for r in rows) / n}

    conditions = sorted({r.condition for r in table.rows})
    return {"all": shares(table.rows), **{c: shares([r for r in table.rows if r.condition == c]) for c in conditions}}
