"""The cluster recipes in structvpr/deploy/cluster/: each parses, carries what its tool requires, and
names the versions this repository pins. The launcher files go through Ray's own schema."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import mlflow
import pytest
import ray
import yaml

import structvpr
from structvpr.platform.jobs.single_job import load_recipe

REPO = Path(structvpr.__file__).resolve().parents[1]
CLUSTER = REPO / "structvpr" / "deploy" / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", ["ray-cluster-onprem.yaml", "ray-cluster-aws.yaml"])
def test_launcher_files_pass_rays_own_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    validate_config(prepare_config(config))  # what `ray up` runs first; raises on an unknown or missing field
    assert config["file_mounts"]["~/structvpr"] == ".", "every node gets this repository"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token", "every node gets the cluster's token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c), "Ray's token auth on every node"
    assert any("pip install" in c and "--editable ." in c for c in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head, "the dashboard and jobs API stay on the head's loopback"
    assert "structvpr/.venv/bin/ray start" in head, "the pinned Ray of the repository's venv"


def test_the_rayjob_runs_a_student_recipe_that_loads():
    job = load("rayjob-student.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    images = {c["image"] for pod in pods for c in pod["spec"]["containers"]}
    assert len(images) == 1, f"head and workers must run one image, got {images}"

    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["structvpr", "train", "student"] and argv[3] == "--config"
    assert (REPO / argv[4]).is_file()
    recipe = load_recipe("student", str(REPO / argv[4]), argv[5:])  # unknown keys or bad values raise here
    gpus = sum(g["replicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
               for g in cluster["workerGroupSpecs"])
    assert recipe.scaling.use_gpu and recipe.scaling.num_workers <= gpus, "one GPU per Train worker"


def test_the_image_builds_on_the_pinned_ray():
    first = next(line for line in (CLUSTER / "Dockerfile").read_text().splitlines() if line.startswith("FROM"))
    assert re.fullmatch(rf"FROM rayproject/ray:{re.escape(ray.__version__)}-py311(-gpu)?", first), first


def test_the_mlflow_server_runs_the_pinned_mlflow_on_postgresql_behind_loopback():
    compose = load("mlflow-compose.yaml")
    services = compose["services"]
    server = services["mlflow"]
    assert f"FROM ghcr.io/mlflow/mlflow:v{mlflow.__version__}" in server["build"]["dockerfile_inline"]
    assert "psycopg2" in server["build"]["dockerfile_inline"], "MLflow's image has no PostgreSQL driver"
    options = dict(a.split("=", 1) for a in server["command"] if a.startswith("--") and "=" in a)
    # +psycopg2: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which the image does not install
    assert options["--backend-store-uri"].startswith("postgresql+psycopg2://")
    assert options["--artifacts-destination"] and "--serve-artifacts" in server["command"]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert set(compose["volumes"]) >= {"postgres-data", "mlflow-artifacts"}


def test_the_mlflow_server_runs_the_auth_app_with_its_users_in_postgresql(tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    compose = load("mlflow-compose.yaml")
    server = compose["services"]["mlflow"]
    assert "--app-name=basic-auth" in server["command"]
    assert "mlflow[auth]==" + mlflow.__version__ in server["build"]["dockerfile_inline"]
    env = server["environment"]
    for secret in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[secret].startswith("${") and ":?" in env[secret], f"{secret} must be required, not defaulted"
    (mount,) = server["configs"]
    assert mount["target"] == env["MLFLOW_AUTH_CONFIG_PATH"]
    # MLflow's own reader of the file the container gets (compose fills in the password)
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(compose["configs"][mount["source"]]["content"].replace("${POSTGRES_PASSWORD}", "pw"))
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-pw")
    config = read_auth_config()
    assert config.database_uri == "postgresql+psycopg2://mlflow:pw@postgres:5432/mlflow_auth"
    assert config.admin_username == "admin" and config.default_permission == "READ"
    (init,) = compose["services"]["postgres"]["configs"]
    assert init["target"].startswith("/docker-entrypoint-initdb.d/")
    assert "CREATE DATABASE mlflow_auth" in compose["configs"][init["source"]]["content"]


def test_the_deploy_doc_walks_through_every_cluster_file():
    doc = (REPO / "docs" / "DEPLOY.md").read_text()
    missing = [f.name for f in CLUSTER.iterdir() if f.is_file() and f"structvpr/deploy/cluster/{f.name}" not in doc]
    assert not missing, f"docs/DEPLOY.md does not mention {missing}"
