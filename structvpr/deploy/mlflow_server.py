"""An `mlflow server` on this machine (sqlite + served artifacts), for tests and for trying the cluster path.

    python -m structvpr.deploy.mlflow_server start [--folder DIR] [--port N]   # prints MLFLOW_TRACKING_URI
    python -m structvpr.deploy.mlflow_server stop [--folder DIR]

Artifacts are served through the server (`--artifacts-destination`), which
remote Ray nodes need. The job runner is off and 2 workers run: about 0.8 GB
instead of 2.6 GB RSS with MLflow 3.17's default job runner (measured on 2 cores). Stopped by the PID recorded at start.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from structvpr.deploy.processes import free_port, load_state, save_state, spawn, stop_group, venv_env, wait_until

STATE_FILE = ".structvpr-mlflow.json"


@dataclass
class MlflowServer:
    folder: Path
    port: int = 0
    pid: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.folder = Path(self.folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "2"]
        env = venv_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        self.pid = spawn(cmd, self.folder / "mlflow-server.log", env).pid
        save_state(self.folder / STATE_FILE, {"folder": str(self.folder), "port": self.port, "pid": self.pid, "uri": self.uri})
        try:
            wait_until(self.healthy, timeout, "mlflow server", self.folder / "mlflow-server.log")
        except BaseException:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as r:
                return r.status == 200
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
    args = parser.parse_args(argv)
    if args.action == "start":
        server = MlflowServer(Path(args.folder), args.port).start()
        print(f"export MLFLOW_TRACKING_URI={server.uri}")
        return 0
    state = load_state(Path(args.folder) / STATE_FILE)
    MlflowServer(Path(state["folder"]), state["port"], state["pid"]).stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
