"""`structvpr tune` end to end on the tiny city: ASHA on the local Ray, MLflow parent and child runs, the report,
--register-best, every trial ending and freeing its workers, and a SIGKILLed driver resumed by the same command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from structvpr.platform.jobs.launcher import run_training
from structvpr.platform.store.tracking import client

TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=3"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sweeps")


def common(shards, workdir, name="mlflow.db"):
    return [f"data.shards={shards}", f"run.storage_path={workdir / 'ckpt'}", f"tracking.uri=sqlite:///{workdir / name}",
            *TINY]


@pytest.fixture(scope="module")
def teacher(tiny_shards, workdir):
    return run_training("teacher", "configs/tiny/teacher.yaml", common(tiny_shards, workdir), progress=False)


def sweep_args(tiny_shards, workdir, teacher, *extra, name="mlflow.db"):
    # in-fold ranks: the sweep machinery is under test here, not the folds (tests/platform/test_jobs.py has those)
    return [*common(tiny_shards, workdir, name), f"teacher={teacher['checkpoint']}", "kd.ranks=in_fold", *extra]


def test_asha_sweep_ends_every_trial_and_reports_to_mlflow(ray_local, tiny_shards, workdir, teacher):
    from structvpr.tuning.command import run_sweep

    summary = run_sweep("configs/tiny/tune.yaml", sweep_args(tiny_shards, workdir, teacher, "tune.num_samples=4"),
                        register_best=True, progress=False)
    rows = summary["trials"]
    assert len(rows) == 4 and all(r["status"] in ("finished", "stopped") for r in rows), rows
    assert any(r["status"] == "stopped" for r in rows), "ASHA (grace 1, factor 2) should stop a trailing trial"
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    parent = c.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and "best_val_recall_at_1" in parent.data.metrics
    assert {"trials.csv", "curves.png", "parallel_coordinates.png", "best_recipe.yaml"} <= {
        a.path for a in c.list_artifacts(parent.info.run_id)}
    children = c.search_runs([parent.info.experiment_id],
                             filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    for row in rows:
        child = next(r for r in children if r.data.tags["structvpr.trial_id"] == row["trial_id"])
        assert child.info.status == {"finished": "FINISHED", "stopped": "KILLED"}[row["status"]]
        steps = [m.step for m in c.get_metric_history(child.info.run_id, "val_recall_at_1")]
        # rank 0 logs an epoch before Tune hears of it, so a stopped trial may have logged one epoch more
        assert steps[:row["epochs"]] == list(range(1, row["epochs"] + 1)) and len(steps) <= row["epochs"] + 1, steps
    version = c.get_model_version("structvpr-student", str(summary["registered_model"]))
    assert version.tags["structvpr.sweep"] == summary["sweep"]
    assert_workers_freed(ray_local)


def assert_workers_freed(ray):
    """Every trial's placement group is gone and the CPUs are back (ray-project/ray#54305 left them behind)."""
    from ray.util.state import list_placement_groups

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = [pg for pg in list_placement_groups() if pg.state != "REMOVED"]
        if not alive and ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"] - 0.01:
            return
        time.sleep(2)
    raise AssertionError(f"placement groups left: {alive}; CPUs {ray.available_resources().get('CPU')}")


def test_killed_driver_resumes_the_sweep(tiny_shards, workdir, teacher):
    """SIGKILL the driver once a trial has finished; the same command continues: no finished trial runs again."""
    args = sweep_args(tiny_shards, workdir, teacher, "tune.num_samples=2", "tune.scheduler.name=none",
                      name="resume.db")
    cmd = [sys.executable, "-m", "structvpr", "--quiet", "tune", "--config", "configs/tiny/tune.yaml", *args]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    c = client(f"sqlite:///{workdir / 'resume.db'}")
    finished_before = wait_for_finished_trial(c, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming sweep" in again.stdout
    parents = [r for r in c.search_runs([experiment(c)]) if r.data.tags.get("structvpr.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", "the parent run must be reused"
    children = [r for r in c.search_runs([experiment(c)]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for run_id in finished_before:  # a finished trial is not trained again: one report per epoch, once
        steps = [m.step for m in c.get_metric_history(run_id, "val_recall_at_1")]
        assert steps == [1, 2, 3], steps


def experiment(c):
    return c.get_experiment_by_name("structvpr-tiny-tune").experiment_id


def wait_for_finished_trial(c, process, timeout: float = 600) -> list[str]:
    """Run ids of the trials that reported their last epoch, as soon as there is one (and another has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            runs = [r for r in c.search_runs([experiment(c)]) if "mlflow.parentRunId" in r.data.tags]
        except Exception:  # the store is not created yet
            runs = []
        done = [r.info.run_id for r in runs if r.data.metrics.get("epoch") == 3]
        if done and len(runs) > len(done):
            return done
        time.sleep(2)
    raise AssertionError("no trial finished in time")
