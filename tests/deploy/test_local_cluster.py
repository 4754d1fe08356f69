"""The local cluster tool: its nodes stop by PID with nothing left behind, Ray's address file included; Ray's
token auth refuses clients without the token."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from structvpr.deploy.local_cluster import LocalCluster, ray_auth_token
from structvpr.deploy.processes import _group_alive, venv_env


def http_status(url: str, authorization: str | None) -> int:
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_head_refuses_clients_without_rays_token_and_stops_without_leftovers(tmp_path):
    """One head for both checks (a start costs 30-40 s here).

    Ray 2.60 token auth, end to end: the jobs API answers 401 without a token and 403 with a wrong one; the
    CLI (jobs over HTTP, `ray status` over the GCS's gRPC) fails with a wrong token or with auth off on its
    side. Then stop: nothing left, Ray's address file included."""
    cluster = LocalCluster(tmp_path, workers=0).start()
    head, current = cluster.pids[0], Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        assert current.read_text().strip().endswith(f":{cluster.gcs_port}")
        check_token_auth(cluster)
    finally:
        cluster.stop()
    assert not _group_alive(head), "the head's process group must be gone (zombies awaiting init aside)"
    # A stale file sent later plain ray.init() calls (Ray Train's placement-group cleaner) to a dead head.
    assert not current.exists() or not current.read_text().strip().endswith(f":{cluster.gcs_port}")


def check_token_auth(cluster: LocalCluster) -> None:
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
    assert done.returncode == 0 and "1.0 CPU" in done.stdout
