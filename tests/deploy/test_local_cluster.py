"""The local cluster tool: its nodes stop by PID with nothing left behind, Ray's address file included."""

from __future__ import annotations

import tempfile
from pathlib import Path

from structvpr.deploy.local_cluster import LocalCluster
from structvpr.deploy.processes import _group_alive


def test_stop_leaves_no_process_and_no_stale_address_file(tmp_path):
    cluster = LocalCluster(tmp_path, workers=0).start()
    head = cluster.pids[0]
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    assert current.read_text().strip().endswith(f":{cluster.gcs_port}")
    cluster.stop()
    assert not _group_alive(head), "the head's process group must be gone (zombies awaiting init aside)"
    # A stale file sent later plain ray.init() calls (Ray Train's placement-group cleaner) to a dead head.
    assert not current.exists() or not current.read_text().strip().endswith(f":{cluster.gcs_port}")
