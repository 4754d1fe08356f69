"""After training (driver): evaluate the best checkpoint, log plots and recipe, hand the model to the store."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from structvpr.config import dump_yaml
from structvpr.datasets.shards.manifest import Manifest
from structvpr.files import write_text_atomic
from structvpr.platform.evaluation.evaluate import evaluate_branch, write_eval_artifacts
from structvpr.platform.recipe import Recipe
from structvpr.platform.store.checkpoint import branch_from_state, load_state
from structvpr.platform.store.logged_model import log_model, registered_version_of_run
from structvpr.platform.store.tracking import log_metrics


def best_checkpoint_path(result) -> str:
    from structvpr.platform.jobs.ray_trainer import SCORE

    scored = [(m.get(SCORE, float("-inf")), c) for c, m in (result.best_checkpoints or [])]
    if scored:
        return max(scored, key=lambda x: x[0])[1].path
    if result.checkpoint is None:
        raise RuntimeError("training finished without any checkpoint")
    return result.checkpoint.path


def finalize_run(recipe: Recipe, name: str, run_id: str, uri: str, result, manifest: Manifest, progress: bool = True,
                 done: Path | None = None) -> dict:
    """Evaluate, log and register the best checkpoint; the summary, written to `done` if given, is returned.

    `done` is written while the MLflow run is still RUNNING, and the run ends FINISHED only after: a driver killed
    in between leaves a job that reads as finished (its summary) or a run that a rerun resumes (not FINISHED),
    never a FINISHED run without a summary, which a rerun would train and log again as a second run of its name."""
    import mlflow

    ckpt = best_checkpoint_path(result)
    state = load_state(ckpt)
    model = branch_from_state(state, ckpt).for_inference()  # as it is served, and as it is logged
    evaluated = eval_manifest(recipe, manifest)  # read before evaluating: the tag names the shards the recall is of
    report, _, queries = evaluate_branch(model, recipe.eval_shards, recipe.eval.split, "cpu",
                                         recipe.eval.n_values, recipe.eval.radius_m, progress=progress)
    metrics = {f"best_{recipe.eval.split}_{k}": v for k, v in report.to_metrics().items()}
    log_metrics(uri, run_id, metrics, step=state["epoch"])
    mlflow.set_tracking_uri(uri)
    history = last_history(result, state)
    with mlflow.start_run(run_id=run_id):  # leaving the block ends the run FINISHED
        log_artifacts(recipe, report, len(queries.keys), history)
        version = _log_model_once(recipe, run_id, model, manifest, state)
        mlflow.set_tags({"structvpr.eval_manifest": evaluated.hash, "structvpr.checkpoint": ckpt})
        # epochs: all that trained (the last checkpoint's history); best_epoch: the evaluated checkpoint's
        summary = {"run_name": name, "mlflow_run_id": run_id, "checkpoint": ckpt,
                   "epochs": history[-1]["epoch"] if history else state["epoch"], "best_epoch": state["epoch"],
                   "metrics": metrics, "recall": {str(n): r for n, r in report.recall.items()},  # as JSON reads back
                   "registered_model": version}
        if done is not None:
            write_text_atomic(done, json.dumps(summary, indent=1))
    print(f"best {recipe.eval.split} recall: " + " ".join(f"R@{n}={v:.1f}" for n, v in report.recall.items()))
    return summary


def _log_model_once(recipe: Recipe, run_id: str, model, manifest: Manifest, state: dict):
    """Log and register the model, unless this run registered one already: a job resumed after a kill during its
    finalization, or a sweep command run again, finalizes the same run a second time."""
    if recipe.tracking.register:
        registered = registered_version_of_run(recipe.kind, run_id)
        if registered is not None:
            print(f"MLflow run {run_id} already registered its model as version {registered}; not logged again")
            return registered
    return log_model(model, manifest.image_size, state.get("trained_on", {}),
                     recipe.kind if recipe.tracking.register else None)


def eval_manifest(recipe: Recipe, train_manifest: Manifest) -> Manifest:
    """The manifest of the shards the recall was computed on: the training shards unless eval.shards is set."""
    return Manifest.load(recipe.eval.shards) if recipe.eval.shards else train_manifest


def last_history(result, best_state: dict) -> list[dict]:
    """Every epoch's report: the last checkpoint holds them all (the best one only those up to it)."""
    if result.checkpoint is None:
        return best_state.get("history", [])
    return load_state(result.checkpoint.path).get("history", [])


def log_artifacts(recipe: Recipe, report, num_queries: int, history: list[dict]) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "recipe.yaml").write_text(dump_yaml(recipe))
        write_eval_artifacts(folder, report, recipe.eval_shards, recipe.eval.split, num_queries)
        if any(k.startswith("group_") for epoch in history for k in epoch):
            from structvpr.platform.ranking.plots import plot_group_shares

            # Which samples the KD term listened to, per epoch and condition (docs/METHOD.md, diagnostics).
            plot_group_shares(history, folder / "weighting_groups.png")
        mlflow.log_artifacts(str(folder))
