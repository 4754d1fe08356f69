"""The cluster path: `ray job submit` of a teacher job and of a sweep to a head + worker started with `ray start`,
tracking to an `mlflow server`; then, on the same cluster (a start costs 30-40 s here), Ray's token auth refuses
clients without the token, and the local cluster tool stops its nodes by PID with nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import structvpr
from structvpr.deploy.local_cluster import LocalCluster, ray_auth_token
from structvpr.deploy.mlflow_server import MlflowServer
from structvpr.deploy.processes import _group_alive, venv_env

from http_status import http_status

REPO = Path(structvpr.__file__).resolve().parents[1]
TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=1", "scaling.num_workers=2",
        "scaling.placement_strategy=STRICT_SPREAD", "scaling.cpus_per_worker=0.5"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    folder = tmp_path_factory.mktemp("services")
    with MlflowServer(folder / "mlflow") as server, LocalCluster(folder / "ray", workers=1, cpus_per_node=1) as cluster:
        yield cluster, server


def submit(cluster: LocalCluster, server: MlflowServer, *entrypoint: str) -> subprocess.CompletedProcess:
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": server.uri}}
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={cluster.dashboard}",
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]
    return subprocess.run(cmd, capture_output=True, text=True, env=venv_env(), timeout=900)


def common(shards, checkpoints, server: MlflowServer) -> list[str]:
    return [f"data.shards={shards}", f"run.storage_path={checkpoints}", f"tracking.uri={server.uri}", *TINY]


def assert_on_both_nodes(run) -> None:
    assert run.info.status == "FINISHED"
    assert len(run.data.tags["structvpr.worker_nodes"].split(",")) == 2, "workers must sit on both nodes"


def test_a_teacher_job_then_a_sweep_job_spread_over_two_nodes(services, tiny_shards, tmp_path):
    """The two ways a team submits work: a training job, and a sweep whose trials are student jobs."""
    from mlflow.tracking import MlflowClient

    cluster, server = services
    teacher = submit(cluster, server, "structvpr", "train", "teacher", "--config", "configs/tiny/teacher.yaml",
                     *common(tiny_shards, tmp_path, server))
    assert teacher.returncode == 0 and "succeeded" in teacher.stdout.lower(), teacher.stdout[-4000:] + teacher.stderr[-2000:]
    sweep = submit(cluster, server, "structvpr", "tune", "--config", "configs/tiny/tune.yaml", "--register-best",
                   "teacher=models:/structvpr-teacher/1", "kd.ranks=in_fold", "tune.num_samples=1",
                   "tune.scheduler.name=none", *common(tiny_shards, tmp_path, server))
    assert sweep.returncode == 0 and "succeeded" in sweep.stdout.lower(), sweep.stdout[-4000:] + sweep.stderr[-2000:]
    # One trial: its workers spread over both nodes is what this test is for (tests/tuning has the sweeps)
    assert "1 finished" in sweep.stdout, sweep.stdout[-4000:]

    mlflow = MlflowClient(server.uri)
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("structvpr-tiny").experiment_id])
    assert run.data.tags["structvpr.kind"] == "teacher" and "best_val_recall_at_1" in run.data.metrics
    assert_on_both_nodes(run)
    assert {"recipe.yaml", "recall_at_n.png", "retrievals.png"} <= {a.path for a in mlflow.list_artifacts(run.info.run_id)}

    runs = mlflow.search_runs([mlflow.get_experiment_by_name("structvpr-tiny-tune").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("structvpr.kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.params["cluster.nodes"] == "2"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    (child,) = children
    assert_on_both_nodes(child)
    assert "val_recall_at_1" in child.data.metrics
    (student,) = mlflow.search_model_versions("name='structvpr-student'")
    assert student.tags["structvpr.sweep"] == parent.info.run_name and student.run_id == child.info.run_id


def test_a_head_refuses_clients_without_rays_token(services):
    """Ray 2.60 token auth, end to end: the jobs API answers 401 without a token and 403 with a wrong one; the
    CLI (jobs over HTTP, `ray status` over the GCS's gRPC) fails with a wrong token or with auth off on its side."""
    cluster, _ = services
    jobs = f"{cluster.dashboard}/api/jobs/"
    assert http_status(jobs, None) == 401
    assert http_status(jobs, "Bearer not-the-token") == 403
    assert http_status(jobs, f"Bearer {ray_auth_token()}") == 200
    ray = str(Path(sys.executable).parent / "ray")
    for refused in ({"RAY_AUTH_TOKEN": "not-the-token"}, {"RAY_AUTH_MODE": "disabled"}):
        for cmd in ([ray, "job", "list", f"--address={cluster.dashboard}"], [ray, "status", f"--address={cluster.address}"]):
            done = subprocess.run(cmd, env=venv_env(refused), capture_output=True, text=True, timeout=60)
            assert done.returncode != 0 and "token" in done.stderr + done.stdout, (refused, cmd[1])
    done = subprocess.run([ray, "status", f"--address={cluster.address}"], env=venv_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "2.0 CPU" in done.stdout, done.stdout


def test_the_cluster_stops_without_leftovers(services):
    """Last in this module: it stops the module's cluster (the fixture's own stop then finds nothing to do)."""
    cluster, _ = services
    head, current = cluster.pids[0], Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    assert current.read_text().strip().endswith(f":{cluster.gcs_port}")
    cluster.stop()
    assert not _group_alive(head), "the head's process group must be gone (zombies awaiting init aside)"
    # A stale file sent later plain ray.init() calls (Ray Train's placement-group cleaner) to a dead head.
    assert not current.exists() or not current.read_text().strip().endswith(f":{cluster.gcs_port}")
