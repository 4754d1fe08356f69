"""The `structvpr` command end to end, as a user runs it: the demo on the tiny city, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args, env_extra=None, cwd=None):
    import os

    env = os.environ | {"HF_HUB_OFFLINE": "1"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "structvpr", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def test_demo_runs_end_to_end_on_the_tiny_city(tmp_path):
    done = run_cli("-q", "demo", "--preset", "tiny", "--workdir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "demo" / "shards" / "manifest.json").read_text())
    assert manifest["segmentation"]["model_id"].startswith("ckpt:seg.ckpt:")
    assert manifest["totals"]["images"] > 150
    assert "OK:" in done.stdout
    assert "R@1" in done.stdout and (tmp_path / "demo" / "eval" / "retrievals.png").is_file()
    assert (tmp_path / "demo" / "mlflow.db").is_file()
    again = run_cli("-q", "demo", "--preset", "tiny", "--workdir", str(tmp_path / "demo"))
    assert again.returncode == 0 and again.stdout.count("kept") == 2 and again.stdout.count("already finished") == 2, again.stdout


@pytest.mark.parametrize("args, message", [
    (["data", "shards", "--format", "vg", "--root", "/nonexistent", "--seg-model", "gt", "--out", "o"], "/nonexistent"),
    (["data", "verify", "/nonexistent"], "no manifest.json"),
    (["data", "shards", "--format", "vg", "--root", ".", "--seg-model", "missing.ckpt", "--out", "o", "--size", "80x"], "--size: size must look like 320x240"),
])
def test_bad_arguments_fail_with_a_message_naming_the_culprit(tmp_path, args, message):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_bad_segmentation_checkpoint_is_refused_before_any_work(tmp_path, tiny_city):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    done = run_cli("data", "shards", "--format", "vg", "--root", str(tiny_city), "--seg-model", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "bad.ckpt" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()
