"""`structvpr registry promote` and `rollback` through a real `mlflow server` on a real PostgreSQL (Debian's package,
which .ci/run installs), so the registry is checked on the backend the cluster recipe uses, not only on sqlite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from structvpr.deploy.mlflow_server import MlflowServer
from structvpr.deploy.postgres_server import PostgresMissing, PostgresServer, blocking_parent, find_bin, service_user
from structvpr.deploy.registry.promotion import HISTORY_PREFIX, history
from structvpr.deploy.registry.records import alias_map, read_version
from test_registry import add_version  # pytest puts tests/deploy on sys.path (no __init__.py): the sqlite tests' helper

NAME = "structvpr-student"


def scratch_folder(tmp_path: Path) -> tuple[Path, bool]:
    """tmp_path, unless the user postgres runs as cannot reach it (as root: `postgres`, and pytest's temp root is
    0700): then a folder of its own under /tmp, which the fixture removes (True)."""
    if blocking_parent(tmp_path, service_user()) is None:
        return tmp_path, False
    return Path(tempfile.mkdtemp(prefix="structvpr-test-postgres-")), True


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """PostgreSQL, then `mlflow server` on it; both stopped by their PIDs (MLflow first) even when a test fails."""
    try:
        find_bin()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    folder, own = scratch_folder(tmp_path_factory.mktemp("postgres"))
    try:
        with PostgresServer(folder) as postgres, \
                MlflowServer(tmp_path_factory.mktemp("mlflow"), backend_store_uri=postgres.mlflow_uri) as mlflow:
            yield postgres, mlflow
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def registry(uri: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, as a CI gate runs it."""
    done = subprocess.run([sys.executable, "-m", "structvpr", "registry", *args, "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=300)
    print(done.stdout, done.stderr, sep="\n")  # shown by pytest when the test fails
    return done


def rows(postgres: PostgresServer, query: str, *params) -> list[tuple]:
    """Straight from PostgreSQL, past MLflow: what the registry really stored there."""
    import psycopg2

    with closing(psycopg2.connect(postgres.uri)) as connection, connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def test_register_promote_and_roll_back_through_mlflow_on_postgres(servers):
    from mlflow.tracking import MlflowClient

    postgres, server = servers
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("postgres")).info.run_id
    client.create_registered_model(NAME)
    first, close, better = (add_version(client, NAME, run_id, r1) for r1 in (30.0, 30.2, 40.0))

    assert registry(server.uri, "promote", NAME, first).returncode == 0
    refused = registry(server.uri, "promote", NAME, close)
    assert refused.returncode == 2 and "(margin rule)" in refused.stderr, refused.stderr
    assert registry(server.uri, "promote", NAME, better).returncode == 0
    assert alias_map(client, NAME) == {"champion": better, "previous": first}
    assert registry(server.uri, "rollback", NAME).returncode == 0
    assert alias_map(client, NAME) == {"champion": first, "previous": better}

    promoted, rolled_back = history(read_version(client, NAME, better).tags)
    assert promoted["action"] == "promote" and promoted["champion"] == [first, better]
    assert "beats champion 30" in promoted["reason"] and promoted["metrics"]["candidate"]["recall_at_1"] == 40.0
    assert [m["action"] for m in history(read_version(client, NAME, first).tags)] == ["promote", "promote", "rollback"]
    assert rolled_back["champion"] == [better, first] and rolled_back["previous"] == [first, better]
    assert history(read_version(client, NAME, close).tags) == [], "a refusal is not a move"

    assert rows(postgres, "SELECT version()")[0][0].startswith("PostgreSQL")
    assert rows(postgres, "SELECT name FROM registered_models") == [(NAME,)], "the promotion lock was released"
    assert rows(postgres, "SELECT version FROM model_versions WHERE name = %s ORDER BY version", NAME) == \
        [(int(first),), (int(close),), (int(better),)]
    assert dict(rows(postgres, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", NAME)) == \
        {"champion": int(first), "previous": int(better)}
    stored = rows(postgres, "SELECT value FROM model_version_tags WHERE name = %s AND version = %s AND key = %s",
                  NAME, int(better), f"{HISTORY_PREFIX}0002")
    assert json.loads(stored[0][0])["action"] == "rollback"
