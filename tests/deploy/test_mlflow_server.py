"""The local `mlflow server` tool: a server that cannot start is reported at once; with MLflow's basic-auth app a
request without credentials is refused, and promotion works with them."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys

import pytest

from structvpr.deploy.mlflow_server import MlflowServer
from structvpr.deploy.registry.records import Evaluation

from http_status import http_status

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def get(url: str, credentials: dict | None = None) -> int:
    if not credentials:
        return http_status(url)
    token = f"{credentials['MLFLOW_TRACKING_USERNAME']}:{credentials['MLFLOW_TRACKING_PASSWORD']}"
    return http_status(url, "Basic " + base64.b64encode(token.encode()).decode())


def test_a_server_that_cannot_start_is_reported_at_once_with_its_log(tmp_path):
    with socket.socket() as busy:  # the port is taken by a socket that never answers
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RuntimeError, match=r"mlflow server exited with status \d+ before it was ready; end of .*mlflow-server.log"):
            MlflowServer(tmp_path, port=busy.getsockname()[1]).start(timeout=600)
    assert not (tmp_path / ".structvpr-mlflow.json").exists(), "a server that never started leaves no state behind"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("auth-server"), auth=True) as running:
        yield running


def promote(server: MlflowServer, credentials: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")} | credentials
    return subprocess.run([sys.executable, "-m", "structvpr", "registry", "promote", *args, "--tracking-uri", server.uri],
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_request_without_credentials_gets_401_and_one_with_them_200(server):
    assert get(server.uri + SEARCH) == 401
    assert get(server.uri + SEARCH, {**server.credentials, "MLFLOW_TRACKING_PASSWORD": "wrong"}) == 401
    assert get(server.uri + SEARCH, server.credentials) == 200
    password_file = server.folder / "admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600, "the admin's password is readable by its owner only"


def test_promotion_needs_the_credentials_and_works_with_them(server, monkeypatch):
    from mlflow.tracking import MlflowClient

    for name, value in server.credentials.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(server.uri)
    run = client.create_run(client.create_experiment("auth")).info.run_id
    client.create_registered_model("m-auth")
    version = client.create_model_version("m-auth", source=f"runs:/{run}/model", run_id=run).version
    for key, value in Evaluation("a" * 64, {1: 40.0, 5: 50.0, 10: 60.0}, "/shards").tags().items():
        client.set_model_version_tag("m-auth", version, key, value)

    refused = promote(server, {}, "m-auth", str(version))
    assert refused.returncode == 2 and refused.stderr.startswith("structvpr: error:"), refused.stderr[-2000:]
    assert client.get_registered_model("m-auth").aliases == {}
    done = promote(server, server.credentials, "m-auth", str(version))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert client.get_registered_model("m-auth").aliases == {"champion": str(version)}
