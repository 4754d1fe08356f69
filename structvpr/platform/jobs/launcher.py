"""The driver side of `structvpr train teacher|student`: the recipe's job, and for a teacher with folds=K
its fold teachers (trained beside it) and ranks table; a weighted student with kd.ranks=out_of_fold gets
that table's ranks."""

from __future__ import annotations

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.jobs.single_job import absolute_paths, check_inputs, load_recipe, train_job
from structvpr.platform.losses.student_loss import KD_MODES
from structvpr.platform.ranking.fold_jobs import plan_for, train_with_folds
from structvpr.platform.recipe import Recipe

__all__ = ["load_recipe", "run_training"]


def run_training(kind: str, config: str | None, overrides: list[str], progress: bool = True) -> dict:
    """Train the recipe's job; a teacher with folds=K trains its fold teachers beside it and writes the ranks table."""
    recipe = absolute_paths(load_recipe(kind, config, overrides))
    manifest = check_inputs(recipe)
    if recipe.folds:
        planned = plan_for(recipe, manifest)  # too many folds is refused here, before any training
        return train_with_folds(recipe, manifest, planned, lambda bars: train_job(recipe, manifest, bars), progress)
    return train_job(recipe, manifest, progress, student_inputs(recipe, manifest))


def student_inputs(recipe: Recipe, manifest: Manifest) -> dict:
    """What the workers of a student get beside the recipe, from its teacher's folds: the out-of-fold r_T of
    every training view (kd.ranks=out_of_fold), the fold teachers and each place's fold (kd.teacher_source=folds)."""
    mode = KD_MODES[recipe.kd.mode]
    wants_ranks = mode.weighted and recipe.kd.ranks == "out_of_fold"
    wants_folds = mode.uses_teacher and recipe.kd.teacher_source == "folds"
    if recipe.kind != "student" or not (wants_ranks or wants_folds):
        return {}
    from structvpr.platform.ranking.lookup import fold_teachers_for_student, ranks_for_student

    table = ranks_for_student(recipe, manifest)  # checked even if only the folds are read: it says which is which
    inputs = {"teacher_ranks": [[r.place, r.view, r.r_t] for r in table.rows]} if wants_ranks else {}
    if wants_folds:
        inputs["fold_teachers"] = fold_teachers_for_student(recipe, manifest)
        inputs["fold_of_place"] = sorted({(r.place, r.fold) for r in table.rows})
    return inputs
