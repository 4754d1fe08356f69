"""A Ray cluster of several nodes on this machine (head + workers, each a `ray start --block`), for tests and trials.

    python -m structvpr.deploy.local_cluster start [--workers 1] [--cpus 1]   # prints RAY_ADDRESS and the dashboard
    python -m structvpr.deploy.local_cluster stop

Each node gets its own CPU, memory and object-store limits (otherwise each
claims the whole machine). Nodes are stopped by the PIDs recorded at start,
never with `ray stop`, which would take down every Ray on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from structvpr.deploy.processes import free_port, load_state, save_state, spawn, stop_group, venv_env, wait_until

STATE_FILE = ".structvpr-cluster.json"
GIB = 1024**3


@dataclass
class LocalCluster:
    folder: Path  # logs and the state file
    workers: int = 1
    cpus_per_node: float = 1
    memory_gib: float = 4
    object_store_gib: float = 1
    gcs_port: int = 0
    dashboard_port: int = 0
    pids: list[int] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def node_args(self) -> list[str]:
        # Fixed default ports (the dashboard agent's 52365, ...) collide with any other Ray on this
        # machine, and the job server then answers "No available agent": every node gets free ports.
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
        return [f"--num-cpus={self.cpus_per_node}", f"--memory={int(self.memory_gib * GIB)}",
                f"--object-store-memory={int(self.object_store_gib * GIB)}", "--block", "--disable-usage-stats", *ports]

    def start(self, timeout: float = 120) -> "LocalCluster":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, timeout: float) -> "LocalCluster":
        self.folder = Path(self.folder).resolve()
        self.gcs_port = self.gcs_port or free_port()
        self.dashboard_port = self.dashboard_port or free_port()
        ray = str(Path(sys.executable).parent / "ray")
        head = [ray, "start", "--head", f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        head_process = spawn(head + self.node_args(), self.folder / "head.log")  # --block: it lives as long as the head
        self.pids.append(head_process.pid)
        self._save()
        wait_until(lambda: self.alive_nodes() >= 1, timeout, "Ray head", self.folder / "head.log", head_process)
        for i in range(self.workers):
            # Its own temp dir: nodes sharing one would share runtime_resources/, and a worker node that
            # finishes with a job's working_dir deletes it under the driver still running on the head.
            temp = Path(tempfile.mkdtemp(prefix=f"ray-w{i}-", dir="/tmp"))  # short: Ray's socket paths are capped
            self.temp_dirs.append(str(temp))
            worker = [ray, "start", f"--address={self.address}", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"]
            self.pids.append(spawn(worker + self.node_args(), self.folder / f"worker{i}.log").pid)
            self._save()
        wait_until(lambda: self.alive_nodes() >= 1 + self.workers, timeout, "Ray worker nodes", self.folder / "worker0.log")
        wait_until(self.job_server_ready, timeout, "Ray job server", self.folder / "head.log")
        # `ray job list` answers before the head's job agent takes submissions ("No available agent"):
        # a first trivial job proves the whole submission path.
        wait_until(self.accepts_jobs, timeout, "Ray job agent", self.folder / "job-agent.log")
        return self

    def alive_nodes(self) -> int:
        """Nodes the head reports alive, asked through `ray status` in a subprocess (no driver in this process)."""
        done = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", f"--address={self.address}"],
                              capture_output=True, text=True, env=venv_env(), timeout=60)
        if done.returncode != 0:
            return 0
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))

    def job_server_ready(self) -> bool:
        """The job server answers `ray job list` (which also proves the auth token works)."""
        done = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list", f"--address={self.dashboard}"],
                              capture_output=True, text=True, env=venv_env(), timeout=60)
        return done.returncode == 0

    def accepts_jobs(self) -> bool:
        done = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={self.dashboard}",
                               "--", "python", "-c", "pass"], capture_output=True, text=True, env=venv_env(), timeout=120)
        (self.folder / "job-agent.log").write_text(done.stdout[-3000:] + done.stderr[-3000:])
        return done.returncode == 0

    def stop(self) -> None:
        for pid in reversed(self.pids):  # workers first, then the head
            stop_group(pid, timeout=3)  # ray start --block ignores SIGTERM in part (see processes.py)
        self.pids = []
        for temp in self.temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)
        self._forget_address()
        self.temp_dirs = []
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def _forget_address(self) -> None:
        """Remove Ray's 'current cluster' file if it still names this (now stopped) head.

        Left behind, it sends later plain ray.init() calls (Ray Train's placement-group cleaner
        among them) to a dead address, where they time out.
        """
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            if current.read_text().strip().rsplit(":", 1)[-1] == str(self.gcs_port):
                current.unlink()
        except (OSError, IndexError):
            pass

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = asdict(self) | {"folder": str(self.folder), "address": self.address, "dashboard": self.dashboard}
        save_state(self.folder / STATE_FILE, state)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def ray_auth_token() -> str:
    """The token Ray 2.60's token auth expects, found where Ray looks: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH
    names, else ~/.ray/auth_token (which the first head started in token mode writes)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.is_file():
        raise FileNotFoundError(f"no Ray auth token at {path}: a head started with RAY_AUTH_MODE=token writes one "
                                "(or `ray get-auth-token --generate`)")
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m structvpr.deploy.local_cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--folder", default=".", help="where logs and the state file go (default: here)")
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default 1)")
    parser.add_argument("--cpus", type=float, default=1, help="CPUs each node offers (default 1)")
    parser.add_argument("--memory-gib", type=float, default=4)
    args = parser.parse_args(argv)
    state_file = Path(args.folder) / STATE_FILE
    if args.action == "start":
        cluster = LocalCluster(Path(args.folder), args.workers, args.cpus, args.memory_gib).start()
        print(f"export RAY_ADDRESS={cluster.dashboard}   # for `ray job submit`; drivers may use {cluster.address}")
        print("export RAY_AUTH_MODE=token   # the head requires Ray's token (~/.ray/auth_token); its clients send it")
        return 0
    state = load_state(state_file)
    if args.action == "status":
        print(json.dumps(state, indent=1))
        return 0
    fields = {k: state[k] for k in ("workers", "cpus_per_node", "memory_gib", "object_store_gib", "gcs_port",
                                    "dashboard_port", "pids", "temp_dirs")}
    LocalCluster(Path(state["folder"]), **fields).stop()
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
