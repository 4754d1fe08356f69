"""The cluster path: `ray job submit` to a head + worker started with `ray start`, tracking to an `mlflow server`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import structvpr
from structvpr.datasets.shards.build import BuildOptions, build_shards
from structvpr.deploy.local_cluster import LocalCluster
from structvpr.deploy.mlflow_server import MlflowServer
from structvpr.deploy.processes import venv_env

REPO = Path(structvpr.__file__).resolve().parents[1]
TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=1", "scaling.num_workers=2",
        "scaling.placement_strategy=STRICT_SPREAD", "scaling.cpus_per_worker=0.5"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    folder = tmp_path_factory.mktemp("services")
    with MlflowServer(folder / "mlflow") as server, LocalCluster(folder / "ray", workers=1, cpus_per_node=1) as cluster:
        yield cluster, server


@pytest.fixture(scope="module")
def shards(tiny_city, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("cluster") / "shards"
    build_shards("vg", tiny_city, out, BuildOptions(image_size=(64, 48), progress=False))
    return out


def submit(cluster: LocalCluster, server: MlflowServer, *entrypoint: str) -> subprocess.CompletedProcess:
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": server.uri}}
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={cluster.dashboard}",
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]
    return subprocess.run(cmd, capture_output=True, text=True, env=venv_env(), timeout=900)


def test_teacher_then_student_jobs_spread_over_two_nodes(services, shards, tmp_path):
    from mlflow.tracking import MlflowClient

    cluster, server = services
    common = [f"data.shards={shards}", f"run.storage_path={tmp_path / 'ckpt'}", f"tracking.uri={server.uri}", *TINY]
    teacher = submit(cluster, server, "structvpr", "train", "teacher", "--config", "configs/tiny/teacher.yaml", *common)
    assert teacher.returncode == 0 and "succeeded" in teacher.stdout.lower(), teacher.stdout[-4000:] + teacher.stderr[-2000:]
    student = submit(cluster, server, "structvpr", "train", "student", "--config", "configs/tiny/student.yaml",
                     "teacher=models:/structvpr-teacher/1", *common)
    assert student.returncode == 0 and "succeeded" in student.stdout.lower(), student.stdout[-4000:] + student.stderr[-2000:]

    mlflow = MlflowClient(server.uri)
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("structvpr-tiny").experiment_id])
    assert {r.data.tags["structvpr.kind"] for r in runs} == {"teacher", "student"}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(run.data.tags["structvpr.worker_nodes"].split(",")) == 2, "workers must sit on both nodes"
        assert "best_val_recall_at_1" in run.data.metrics
        artifacts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
        assert {"recipe.yaml", "recall_at_n.png", "retrievals.png"} <= artifacts
    assert mlflow.get_latest_versions("structvpr-student") and mlflow.get_latest_versions("structvpr-teacher")
