"""Fault tolerance: SIGKILL a training worker mid-epoch; the job restarts it, resumes from its last checkpoint, finishes.

The job trains on train-only shards and validates on other shards (eval.shards, as GSV-Cities models validate on
Pitts30k val): one job checks both (each costs about 30 s here); tests/platform/test_eval_shards.py has the refusals."""

from __future__ import annotations

import os
import signal
import threading
import time

from structvpr.platform.jobs.launcher import run_training
from structvpr.platform.store.checkpoint import load_state
from structvpr.platform.store.tracking import client


def train_worker_pid(gcs_address: str) -> int | None:
    """The PID of a live Ray Train worker, found through Ray's state API (never by process name)."""
    from ray.util.state import list_actors

    # The address is explicit: left to itself the state API may follow /tmp/ray to another test's cluster.
    actors = list_actors(address=gcs_address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                         detail=True)
    return actors[0].pid if actors else None


def checkpoints(run_dir) -> list:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def test_killed_worker_resumes_from_its_last_checkpoint(train_only, tiny_shards, tmp_path, ray_local):
    storage = tmp_path / "ckpt"
    # Long enough epochs (several seconds) that the kill lands inside one, not between.
    args = [f"data.shards={train_only}", f"eval.shards={tiny_shards}", f"run.storage_path={storage}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "model.backbone=resnet18", "model.dim=32", "data.places_per_batch=8", "data.views_per_place=4",
            "data.batches_per_epoch=12", "train.epochs=3", "run.max_failures=2", "run.name=fault-test"]
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_training("teacher", "configs/tiny/teacher.yaml", args, progress=False)))
    thread.start()
    run_dir = storage / "fault-test"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoints(run_dir):
        time.sleep(0.2)
    assert checkpoints(run_dir), "the first epoch never checkpointed"
    time.sleep(2.0)  # into the second epoch
    victim = train_worker_pid(ray_local.get_runtime_context().gcs_address)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = len(checkpoints(run_dir))
    thread.join(timeout=600)
    assert not thread.is_alive(), "the job did not finish after the worker was killed"
    summary = result["summary"]
    state = load_state(checkpoints(run_dir)[-1])
    assert state["epoch"] == 3
    assert state["resumed_from"] and state["resumed_from"][0] >= 1, "the restart must resume from a checkpoint, not from scratch"
    assert killed_at < 3
    mlflow = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("structvpr-tiny").experiment_id])
    assert len(runs) == 1, "one MLflow run across the automatic restart"
    assert runs[0].info.run_id == summary["mlflow_run_id"] and runs[0].info.status == "FINISHED"
    check_validated_on_the_eval_shards(runs[0], train_only, tiny_shards)


def check_validated_on_the_eval_shards(run, train_only, eval_shards) -> None:
    from structvpr.datasets.shards.manifest import Manifest

    assert {"val_recall_at_1", "best_val_recall_at_1"} <= set(run.data.metrics)
    assert run.data.tags["structvpr.eval_manifest"] == Manifest.load(eval_shards).hash
    assert run.data.tags["structvpr.train_manifest"] == Manifest.load(train_only).hash
    assert run.data.params["eval.shards"] == str(eval_shards.resolve())
