"""After a sweep: the trials table, its plots, the best trial's recipe, the child runs' status, the best model.

Artifacts of the parent run: trials.csv (one row per trial: id, status, epochs run, best and last
value of the metric, the sampled values, its MLflow run), parallel_coordinates.png, curves.png (the
metric by epoch for every trial) and best_recipe.yaml, ready to run with `structvpr train student`.
"""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

from structvpr.config import dump_yaml
from structvpr.tuning.sweep import Sweep
from structvpr.tuning.trial import SweepContext, trial_recipe, trial_run_name

STATUS_TAG = "structvpr.trial_status"
HISTORY = "history"  # a row's (epoch, metric) pairs: drawn in curves.png, left out of trials.csv
RUN_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "error": "FAILED"}


def trial_rows(results, sweep: Sweep) -> list[dict]:
    """One row per trial, best first: status (finished, stopped by the scheduler, error) and the metric."""
    return _best_first([_row(result, sweep) for result in results], sweep)


def _best_first(rows: list[dict], sweep: Sweep) -> list[dict]:
    sign = -1 if sweep.tune.mode == "max" else 1
    return sorted(rows, key=lambda r: (math.isnan(r["best"]), sign * (0 if math.isnan(r["best"]) else r["best"])))


def _row(result, sweep: Sweep) -> dict:
    history = _history(result, sweep.tune.metric)
    trial_id = result.metrics.get("trial_id") or Path(result.path).name
    return {"trial_id": trial_id, **_progress(history, sweep, failed=bool(result.error)),
            **{k: result.config.get(k) for k in sweep.space}, "run_name": trial_run_name(sweep.name, trial_id),
            HISTORY: history}


def _progress(history: list[tuple[float, float]], sweep: Sweep, failed: bool) -> dict:
    """Status, epochs run, best and last value of a trial from its (epoch, metric) history."""
    epochs = int(max((e for e, _ in history), default=0))
    values = [v for _, v in history]
    return {"status": "error" if failed else ("finished" if epochs >= sweep.recipe.train.epochs else "stopped"),
            "epochs": epochs, "best": (max(values) if sweep.tune.mode == "max" else min(values)) if values else float("nan"),
            "last": values[-1] if values else float("nan")}


def _history(result, metric: str) -> list[tuple[float, float]]:
    frame = result.metrics_dataframe
    if frame is None or metric not in frame or "epoch" not in frame:
        return []
    return [(float(e), float(v)) for e, v in zip(frame["epoch"], frame[metric]) if not math.isnan(v)]


def write_table(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        fields = [k for k in rows[0] if k != HISTORY] if rows else ["trial_id"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_curves(rows: list[dict], sweep: Sweep, path: Path) -> Path:
    """The metric by epoch of every trial, from the rows' histories (completed from MLflow by mark_child_runs)."""
    from structvpr.platform.evaluation.plots import _save, plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:
        if row[HISTORY]:
            ax.plot(*zip(*row[HISTORY]), marker="o", ms=3, lw=1, alpha=0.8)
    ax.set(xlabel="epoch", ylabel=sweep.tune.metric, title=f"{sweep.name}: every trial (stopped trials end early)")
    return _save(fig, path)


def plot_parallel(rows: list[dict], sweep: Sweep, path: Path) -> Path:
    """Parallel coordinates: one line per trial across the sampled values, coloured by its best metric."""
    from structvpr.platform.evaluation.plots import _save, plt

    keys = [k for k in sweep.space if all(isinstance(r[k], (int, float)) for r in rows)] + ["best"]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(keys)), 4.2))
    usable = [r for r in rows if not math.isnan(r["best"])]
    if usable:
        scores = [r["best"] for r in usable]
        low, high = min(scores), max(scores)
        for r in usable:
            ys = [_scaled(r[k], [q[k] for q in usable]) for k in keys]
            ax.plot(range(len(keys)), ys, color=plt.cm.viridis((r["best"] - low) / ((high - low) or 1)), alpha=0.8)
    ax.set_xticks(range(len(keys)), [k.replace("kd.weighting.", "") for k in keys], rotation=20)
    ax.set(yticks=[], title=f"trials by value (each axis scaled to its range); colour: best {sweep.tune.metric}")
    return _save(fig, path)


def _scaled(value: float, column: list[float]) -> float:
    low, high = min(column), max(column)
    return (value - low) / (high - low) if high > low else 0.5


def best_recipe_yaml(sweep: Sweep, context: SweepContext, row: dict, path: Path) -> Path:
    recipe = trial_recipe(context, sampled(sweep, row), row["trial_id"])
    recipe.run.name = ""  # a run of its own when trained again, not the trial's
    recipe.tracking.register = True
    path.write_text(f"# best trial {row['trial_id']} of {context.name}: best {row['best']:.3f}\n" + dump_yaml(recipe))
    return path


def sampled(sweep: Sweep, row: dict) -> dict:
    """The values the searcher chose for this trial."""
    return {k: row[k] for k in sweep.space}


def mark_child_runs(rows: list[dict], sweep: Sweep, uri: str, parent_run_id: str) -> list[dict]:
    """Each trial's MLflow run ends with its status: FINISHED, KILLED (stopped by ASHA) or FAILED; the rows, best
    first, completed from the runs' own metric histories.

    Tune can miss a trial's last report (docs/TUNING.md: a trial with 3 epochs in MLflow had 2 in Tune's record
    and read as stopped), and a driver killed mid-sweep may not have saved the last reports it had. Rank 0 logs
    every epoch to MLflow before reporting it, so the child run's history is the record. A child run that no trial owns (its
    trial started just before the driver was killed, and Tune, restored from an earlier state, ran the point
    again under another trial id) is ended KILLED and tagged `lost`."""
    from structvpr.platform.store.tracking import RUN_NAME_TAG, client

    c = client(uri)
    children = {r.data.tags.get(RUN_NAME_TAG): r for r in child_runs(c, sweep, uri, parent_run_id)}
    for row in rows:
        run = children.pop(row["run_name"], None)
        if run is None:
            continue
        logged = [(float(m.step), m.value) for m in c.get_metric_history(run.info.run_id, sweep.tune.metric)]
        if logged and max(e for e, _ in logged) > row["epochs"]:
            history = sorted(dict(logged).items())  # an epoch logged twice (rerun after a kill) counts once
            row.update(_progress(history, sweep, failed=row["status"] == "error"), **{HISTORY: history})
        c.set_tag(run.info.run_id, STATUS_TAG, row["status"])
        c.set_terminated(run.info.run_id, status=RUN_STATUS[row["status"]])
        row["mlflow_run_id"] = run.info.run_id
    for name, run in children.items():
        c.set_tag(run.info.run_id, STATUS_TAG, "lost")
        c.set_terminated(run.info.run_id, status="KILLED")
        print(f"MLflow run {run.info.run_id} ({name}) belongs to no trial (a trial lost when the driver was killed; "
              "Tune ran its point again): ended KILLED, tagged lost")
    return _best_first(rows, sweep)


def end_interrupted_child_runs(sweep: Sweep, uri: str, parent_run_id: str) -> int:
    """After Ctrl-C: the child runs of the trials Tune stopped, ended KILLED and tagged `interrupted` instead of
    left RUNNING until a resume; the resumed trial reopens its run (start_or_resume_run reuses a run that is not
    FINISHED) and mark_child_runs gives it its final status. The number of runs ended."""
    from structvpr.platform.store.tracking import client

    c = client(uri)
    running = [r for r in child_runs(c, sweep, uri, parent_run_id) if r.info.status == "RUNNING"]
    for run in running:
        c.set_tag(run.info.run_id, STATUS_TAG, "interrupted")
        c.set_terminated(run.info.run_id, status="KILLED")
    return len(running)


def child_runs(c, sweep: Sweep, uri: str, parent_run_id: str) -> list:
    """The MLflow runs of the sweep's trials (children of its parent run), whatever their status."""
    from structvpr.platform.store.tracking import experiment_id

    exp = experiment_id(uri, sweep.recipe.tracking.experiment)
    return c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10_000)


def log_report(sweep: Sweep, context: SweepContext, rows: list[dict]) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_table(rows, folder / "trials.csv")
        plot_curves(rows, sweep, folder / "curves.png")
        plot_parallel(rows, sweep, folder / "parallel_coordinates.png")
        if rows and not math.isnan(rows[0]["best"]):
            best_recipe_yaml(sweep, context, rows[0], folder / "best_recipe.yaml")
        mlflow.set_tracking_uri(context.tracking_uri)
        with mlflow.start_run(run_id=context.parent_run_id):
            mlflow.log_artifacts(str(folder))
            if rows and not math.isnan(rows[0]["best"]):
                mlflow.log_metric(f"best_{sweep.tune.metric}", rows[0]["best"])
                mlflow.set_tag("structvpr.best_trial", rows[0]["trial_id"])


def register_best(sweep: Sweep, context: SweepContext, row: dict):
    """Log the best trial's best checkpoint as a model in its run and register it as a structvpr-student version."""
    from structvpr.platform.jobs.finalize import finalize_run
    from structvpr.platform.store.logged_model import REGISTERED_NAMES
    from structvpr.platform.store.tracking import client

    recipe = trial_recipe(context, sampled(sweep, row), row["trial_id"])
    recipe.tracking.register = True
    kept = kept_checkpoints(recipe.run.storage_path, recipe.run.name)
    summary = finalize_run(recipe, recipe.run.name, row["mlflow_run_id"], context.tracking_uri, kept, sweep.manifest)
    if summary["registered_model"]:
        client(context.tracking_uri).set_model_version_tag(REGISTERED_NAMES["student"], str(summary["registered_model"]),
                                                           "structvpr.sweep", sweep.name)
    return summary["registered_model"]


def kept_checkpoints(storage_path: str, run_name: str):
    """Ray Train's own record of a trial's checkpoints (its checkpoint manager snapshot), as a Train Result.

    Not the checkpoint paths in Tune's per-epoch rows: Train deletes all but run.keep_checkpoints of them
    (ranked by val recall@1, which need not be the sweep's metric), and a trial resumed after a killed
    driver reports again from its restored state, so a row can name a folder that no longer exists."""
    import ray.train

    path = f"{str(storage_path).rstrip('/')}/{run_name}"
    try:
        return ray.train.Result.from_path(path)
    except RuntimeError as exc:
        raise RuntimeError(f"the best trial's Ray Train run at {path} has no record of its checkpoints ({exc}); "
                           "its checkpoints were moved or deleted: run the sweep's best_recipe.yaml with "
                           "`structvpr train student` to train that model again") from None
