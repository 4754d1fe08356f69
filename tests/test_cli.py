"""The `structvpr` command end to end, as a user runs it: the demo on the tiny city, and clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest


def run_cli(*args, env_extra=None, cwd=None):
    import os

    env = os.environ | {"HF_HUB_OFFLINE": "1"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "structvpr", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def test_demo_runs_the_whole_platform_on_the_tiny_city_and_keeps_finished_stages(tmp_path):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "demo"
    started = time.perf_counter()
    done = run_cli("-q", "demo", "--preset", "tiny", "--workdir", str(work))
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\n== ") == 15 and "== 14/14" in done.stdout, done.stdout  # 14 stages and the report
    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert manifest["segmentation"]["model_id"].startswith("ckpt:seg.ckpt:")
    assert json.loads((work / "shards-gt" / "manifest.json").read_text())["segmentation"]["model_id"] == "gt"
    check_report(work, wall)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    check_promotion_and_serving(work, client)
    check_weighted_student(work, client)

    (work / "stages" / "served.json").unlink()  # as if the demo had been stopped during that stage
    again = run_cli("-q", "demo", "--preset", "tiny", "--workdir", str(work))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("finished before; kept") == 13 and kept(work, "served")["served"], again.stdout
    assert (work / "report.md").read_text().count("\n## ") == 8
    other = run_cli("-q", "demo", "--preset", "tiny", "--seed", "1", "--workdir", str(work))
    assert other.returncode == 2 and "made with --preset tiny --seed 0" in other.stderr, other.stderr


def check_report(work, wall: float) -> None:
    report = (work / "report.md").read_text()
    minutes = float(re.search(r"\(([0-9.]+) min of stages", report).group(1))
    # Stages run at once are counted once, not summed (3 s: the report rounds to a tenth of a minute).
    assert minutes * 60 <= wall + 3, (minutes, wall)
    for heading in ("## Recall on the test split", "## The method's claims", "## Weighting groups", "## Sweep",
                    "## Promotion", "## Serving", "## Where weighted KD helps", "## Time per stage"):
        assert heading in report, heading
    for model in ("teacher (ground-truth seg)", "teacher (predicted seg)", "RGB only", "plain KD", "weighted KD",
                  "sweep's best trial"):
        assert f"| {model}" in report, model
    assert (work / "recall_by_condition.png").stat().st_size > 10_000 and (work / "weighting_groups.png").is_file()


def check_promotion_and_serving(work, client) -> None:
    """The best student on val is the champion, served; the report is an MLflow artifact."""
    promotion = kept(work, "promotion")
    champion = client.get_model_version_by_alias("structvpr-student", "champion")
    assert promotion["promoted"] and str(champion.version) == promotion["best"]["version"] == str(promotion["champion"])
    best_on_val = max(promotion["candidates"], key=lambda c: c["val_r1"])
    assert promotion["best"] == best_on_val and len(promotion["candidates"]) == 4  # 3 students + the sweep's best
    served = kept(work, "served")
    assert served["served"] and len(served["queries"]) == 4
    assert all(q["top1_key"].startswith("test_db_") for q in served["queries"])
    assert kept(work, "latency")["teacher_path"] > 0 and len(kept(work, "sweep")["trials"]) == 1
    report_runs = client.search_runs([client.get_experiment_by_name("structvpr-demo").experiment_id])
    assert {a.path for a in client.list_artifacts(report_runs[0].info.run_id, "report")} >= {"report/report.md"}


def check_weighted_student(work, client) -> None:
    """It read the teacher's out-of-fold ranks: every view counted in a group, and under its condition."""
    weighted = client.get_run(kept(work, "weighted_kd")["mlflow_run_id"])
    groups = {k: v for k, v in weighted.data.metrics.items() if k.startswith("group_")}
    per_view = 4 * 2 * 2  # places x views per batch x batches (tiny preset, 1 epoch)
    assert sum(v for k, v in groups.items() if "." not in k) == per_view == sum(v for k, v in groups.items() if "." in k)
    assert weighted.data.metrics["train_kd"] > 0
    assert "weighting_groups.png" in {a.path for a in client.list_artifacts(weighted.info.run_id)}


def kept(work, stage: str) -> dict:
    return json.loads((work / "stages" / f"{stage}.json").read_text())["result"]


@pytest.mark.parametrize("args, message", [
    (["data", "shards", "--format", "vg", "--root", "/nonexistent", "--seg-model", "gt", "--out", "o"], "/nonexistent"),
    (["data", "verify", "/nonexistent"], "no manifest.json"),
    (["data", "shards", "--format", "vg", "--root", ".", "--seg-model", "missing.ckpt", "--out", "o", "--size", "80x"], "--size: size must look like 320x240"),
])
def test_bad_arguments_fail_with_a_message_naming_the_culprit(tmp_path, args, message):
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_a_folder_without_shards_is_reported_without_loading_torch(tmp_path):
    """`data verify` reads tar files and JSON: saying a folder holds no shards must not cost torch's import."""
    code = "import sys; from structvpr.cli import main; code = main(['data', 'verify', sys.argv[1]]); print(code, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    assert f"no manifest.json in {tmp_path}" in done.stderr


def test_bad_segmentation_checkpoint_is_refused_before_any_work(tmp_path, tiny_city):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    done = run_cli("data", "shards", "--format", "vg", "--root", str(tiny_city), "--seg-model", str(bad), "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "bad.ckpt" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()
