"""An `mlflow server` on this machine (sqlite or a given store, served artifacts), for tests and trying the cluster path.

    python -m structvpr.deploy.mlflow_server start [--folder DIR] [--port N] [--auth] [--backend-store-uri URI]
    python -m structvpr.deploy.mlflow_server stop [--folder DIR]

`start` prints MLFLOW_TRACKING_URI. The store is DIR/mlflow.db (sqlite) unless --backend-store-uri names another,
e.g. the PostgreSQL of structvpr.deploy.postgres_server (docs/DEPLOY.md, "MLflow on PostgreSQL (local)").

--auth starts MLflow's basic-auth app: every request needs a user and password. The admin's password
is generated at the first start and kept in DIR/admin-password (mode 0600); clients send it through
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, which `start --auth` prints.

Artifacts are served through the server (`--artifacts-destination`), which
remote Ray nodes need. The job runner is off and 2 workers run: about 0.8 GB
instead of 2.6 GB RSS with MLflow 3.17's default job runner (measured on 2 cores). Stopped by the PID recorded at start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from structvpr.deploy.processes import free_port, load_state, save_state, spawn, stop_group, venv_env, wait_until

STATE_FILE = ".structvpr-mlflow.json"
ADMIN = "admin"
# MLflow's own basic_auth.ini with this server's user database; the admin password comes from the environment.
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{folder}/basic_auth.db
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
"""


@dataclass
class MlflowServer:
    folder: Path
    port: int = 0
    pid: int = 0
    auth: bool = False
    backend_store_uri: str = ""  # empty: sqlite in the folder

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.folder = Path(self.folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", self.backend_store_uri or f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "2"]
        env = venv_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
            env |= self._auth_env()
        process = spawn(cmd, self.folder / "mlflow-server.log", env)
        self.pid = process.pid
        save_state(self.folder / STATE_FILE, {"folder": str(self.folder), "port": self.port, "pid": self.pid, "uri": self.uri})
        try:
            wait_until(self.healthy, timeout, "mlflow server", self.folder / "mlflow-server.log", process)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def credentials(self) -> dict[str, str]:
        """The environment a client needs (none without --auth)."""
        if not self.auth:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self._password_file().read_text().strip()}

    def _password_file(self) -> Path:
        return self.folder / "admin-password"

    def _secret(self, path: Path) -> str:
        """A random secret kept in `path` (created once, mode 0600), so that a restart keeps it."""
        if not path.is_file():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(18) + "\n")
        return path.read_text().strip()

    def _auth_env(self) -> dict[str, str]:
        """The auth app's config: its user database in this folder, the admin's password and the key that signs
        its CSRF tokens, each made once and kept 0600."""
        ini = self.folder / "basic_auth.ini"
        ini.write_text(AUTH_INI.format(folder=self.folder, admin=ADMIN))
        return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": self._secret(self._password_file()),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret(self.folder / "flask-secret-key")}

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as r:
                return r.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # the auth app answers, and refuses a request without credentials
        except OSError:
            return False

    def stop(self) -> None:
        if self.pid:
            stop_group(self.pid, timeout=5)
            self.pid = 0
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m structvpr.deploy.mlflow_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--folder", default="mlflow-server", help="database, artifacts and log (default ./mlflow-server)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--auth", action="store_true", help="require a user and password (MLflow's basic-auth app)")
    parser.add_argument("--backend-store-uri", default="", help="runs and registry (default: sqlite in the folder)")
    args = parser.parse_args(argv)
    if args.action == "start":
        server = MlflowServer(Path(args.folder), args.port, auth=args.auth,
                              backend_store_uri=args.backend_store_uri).start()
        print(f"export MLFLOW_TRACKING_URI={server.uri}")
        for name, value in server.credentials.items():
            print(f"export {name}={value}")
        return 0
    state = load_state(Path(args.folder) / STATE_FILE)
    MlflowServer(Path(state["folder"]), state["port"], state["pid"]).stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
