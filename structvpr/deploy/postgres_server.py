"""A throwaway PostgreSQL cluster in a scratch folder, so MLflow's registry can be run and tested on PostgreSQL here.

    python -m structvpr.deploy.postgres_server start [--folder DIR] [--port N]   # prints the two URIs below
    python -m structvpr.deploy.postgres_server stop [--folder DIR]

The cluster recipe runs MLflow on PostgreSQL (structvpr/deploy/cluster/mlflow-compose.yaml); this starts the same
kind of backend on one machine from Debian's binaries (`apt-get install postgresql`), in DIR: the data folder, the
unix socket, the log and the state. It listens on 127.0.0.1 only and trusts local and 127.0.0.1 connections without
a password, so it is for one machine's tests and trials, never for a shared server. PostgreSQL refuses to run as
root: as root, it runs as Debian's `postgres` user (through setpriv, which execs, so the PID we record is the
postmaster's), and DIR must be reachable by that user. Stopped by the PID recorded at start (docs/DEPLOY.md).

`uri` (postgresql://USER@127.0.0.1:PORT/mlflow) is libpq's, for psql and psycopg2. MLflow gets `mlflow_uri`,
which names the driver: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, and the driver pinned in
pyproject.toml is psycopg2.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from structvpr.deploy.processes import free_port, load_state, save_state, spawn, stop_group, wait_until

STATE_FILE = ".structvpr-postgres.json"
DATABASE = "mlflow"
DEBIAN_BINS = Path("/usr/lib/postgresql")
TOOLS = ("initdb", "postgres", "pg_isready", "createdb")
# Trust without a password, and only over the unix socket (in DIR) and 127.0.0.1: a scratch cluster for this machine.
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
# Throwaway data: crash safety is not wanted, speed is (MLflow's migrations are many small transactions).
SPEED = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresMissing(RuntimeError):
    """No PostgreSQL binaries on this machine (tests skip on it)."""


def find_bin() -> Path:
    """The folder with initdb and postgres: Debian's newest /usr/lib/postgresql/N/bin, else initdb's on PATH."""
    debian = sorted(DEBIAN_BINS.glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    on_path = shutil.which("initdb")
    for folder in debian + ([Path(on_path).resolve().parent] if on_path else []):
        if all(os.access(folder / tool, os.X_OK) for tool in TOOLS):
            return folder
    raise PostgresMissing(f"PostgreSQL's {', '.join(TOOLS)} not found in {DEBIAN_BINS}/*/bin nor on PATH: "
                          "install Debian's package (apt-get install postgresql)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def service_user() -> str:
    """Who runs the cluster (and names its superuser): ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise RuntimeError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as: "
                           "apt-get install postgresql creates it") from None


def blocking_parent(folder: Path, user: str) -> Path | None:
    """The first folder above `folder` that `user` cannot pass through (pytest's 0700 temp root, say), or None."""
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for parent in folder.parents:
        st = parent.stat()
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == entry.pw_uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid in groups and st.st_mode & stat.S_IXGRP)):
            return parent
    return None


@dataclass
class PostgresServer:
    folder: Path
    port: int = 0
    pid: int = 0
    user: str = ""

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def mlflow_uri(self) -> str:
        """The backend store URI for `mlflow server --backend-store-uri`."""
        return self.uri.replace("postgresql://", "postgresql+psycopg2://", 1)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def start(self, timeout: float = 60) -> "PostgresServer":
        bin_dir = find_bin()
        self.folder = Path(self.folder).resolve()
        self.user = self.user or service_user()
        self._prepare_folder()
        if not (self.data / "PG_VERSION").is_file():
            self._initdb(bin_dir)
        self.port = self.port or free_port()
        process = spawn(self._as_user() + [str(bin_dir / "postgres"), "-D", str(self.data), *self._options()],
                        self.log, dict(os.environ))
        self.pid = process.pid
        save_state(self.folder / STATE_FILE, {"folder": str(self.folder), "port": self.port, "pid": self.pid,
                                              "user": self.user, "uri": self.uri})
        try:
            wait_until(lambda: self._ready(bin_dir), timeout, "postgres", self.log, process)
            self._create_database(bin_dir)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare_folder(self) -> None:
        """DIR and its socket folder belong to the user who runs postgres, who must be able to reach them."""
        (self.folder / "socket").mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        blocked = blocking_parent(self.folder, self.user)
        if blocked is not None:
            raise RuntimeError(f"{blocked} (mode {stat.S_IMODE(blocked.stat().st_mode):o}) keeps the {self.user} user "
                               f"from {self.folder}; PostgreSQL refuses to run as root, so give a folder that "
                               f"{self.user} can reach (under /tmp, say)")
        for path in (self.folder, self.folder / "socket"):
            shutil.chown(path, self.user, pwd.getpwnam(self.user).pw_gid)

    def _as_user(self) -> list[str]:
        """Nothing when we are not root; else setpriv to the service user (it execs: no watching parent, no PAM)."""
        if os.geteuid() != 0:
            return []
        entry = pwd.getpwnam(self.user)
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]

    def _initdb(self, bin_dir: Path) -> None:
        cmd = self._as_user() + [str(bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                                 "--encoding=UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {done.returncode}): {(done.stdout + done.stderr)[-3000:]}")
        (self.data / "pg_hba.conf").write_text(HBA)  # root may write it: postgres reads it, it need not own it

    def _options(self) -> list[str]:
        settings = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                    "unix_socket_directories": str(self.folder / "socket")} | SPEED
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _client(self, bin_dir: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def _ready(self, bin_dir: Path) -> bool:
        return self._client(bin_dir, "pg_isready", "-q").returncode == 0

    def _create_database(self, bin_dir: Path) -> None:
        done = self._client(bin_dir, "createdb", DATABASE)
        if done.returncode != 0 and "already exists" not in done.stderr:  # a restart of the same folder
            raise RuntimeError(f"createdb {DATABASE} failed: {done.stderr.strip()}")

    def stop(self) -> None:
        """SIGTERM (PostgreSQL's smart shutdown: it waits for connected clients, so stop MLflow first), then
        SIGKILL after 10 s, to the process group started here."""
        if self.pid:
            stop_group(self.pid, timeout=10)
            self.pid = 0
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m structvpr.deploy.postgres_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--folder", default="postgres-server", help="data, socket, log (default ./postgres-server)")
    parser.add_argument("--port", type=int, default=0, help="default: a free port (the printed URI names it)")
    args = parser.parse_args(argv)
    if args.action == "start":
        server = PostgresServer(Path(args.folder), args.port).start()
        print(f"export STRUCTVPR_POSTGRES_URI={server.uri}")
        print(f"export MLFLOW_BACKEND_STORE_URI={server.mlflow_uri}")
        return 0
    state = load_state(Path(args.folder) / STATE_FILE)
    PostgresServer(Path(state["folder"]), state["port"], state["pid"], state["user"]).stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
