"""Teacher and student jobs on Ray Train, end to end on the tiny city: checkpoints, MLflow runs, registry, eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from structvpr.config import ConfigError
from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.datasets.shards.build import BuildOptions, build_shards
from structvpr.platform.jobs.launcher import load_recipe, run_training
from structvpr.platform.jobs.single_job import DONE_FILE
from structvpr.platform.store.references import ModelSourceError
from structvpr.platform.store.checkpoint import load_state
from structvpr.platform.store.tracking import client

TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=2"]


@pytest.fixture(scope="module")
def shards(tiny_shards):
    return tiny_shards


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def overrides(shards, workdir, *extra):
    return [f"data.shards={shards}", f"run.storage_path={workdir / 'ckpt'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", *TINY, *extra]


@pytest.fixture(scope="module")
def teacher(shards, workdir):
    return run_training("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir), progress=False)


def test_teacher_job_checkpoints_tracks_and_registers(teacher, workdir):
    state = load_state(teacher["checkpoint"])
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "spec"} <= set(state)
    assert state["spec"]["in_chans"] == 8 and state["trained_on"]["image_size"] == [64, 48]
    run = client(f"sqlite:///{workdir / 'mlflow.db'}").get_run(teacher["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["kd.mode"] == "weighted"
    assert "val_recall_at_1" in run.data.metrics and "best_val_recall_at_1" in run.data.metrics
    assert "structvpr.eval_manifest" in run.data.tags
    history = client(f"sqlite:///{workdir / 'mlflow.db'}").get_metric_history(run.info.run_id, "val_recall_at_1")
    assert [m.step for m in history] == [1, 2]
    assert teacher["registered_model"] == 1


def test_same_recipe_again_does_not_train_twice(teacher, shards, workdir):
    again = run_training("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir), progress=False)
    # the same summary, read back from its file (recall keys were ints when trained, strings when read back)
    assert again == teacher


def finished_training(checkpoint: str):
    """What finalize_run reads of a Ray Train result: a last checkpoint and no scored ones."""
    return SimpleNamespace(best_checkpoints=[], checkpoint=SimpleNamespace(path=checkpoint))


def test_a_jobs_summary_is_written_before_its_mlflow_run_ends(teacher, shards, workdir, tmp_path, monkeypatch):
    """A driver killed after the run ended FINISHED but before the summary was written left a job that a rerun
    trained and logged again, as a second MLflow run of its name (seen in the kill test below). The summary now
    comes first, while the run is RUNNING (a rerun resumes it); a summary whose run was left RUNNING is ended."""
    from structvpr.platform.jobs import finalize
    from structvpr.platform.store.tracking import start_or_resume_run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    recipe = load_recipe("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir, "tracking.register=false"))
    run_id = start_or_resume_run(uri, "finalize-order", "finalize-order", {}, {})
    status_when_written = []
    real_write = finalize.write_text_atomic

    def write(path, text):
        status_when_written.append(client(uri).get_run(run_id).info.status)
        real_write(path, text)

    monkeypatch.setattr(finalize, "write_text_atomic", write)
    done = tmp_path / "structvpr_done.json"
    summary = finalize.finalize_run(recipe, "finalize-order", run_id, uri, finished_training(teacher["checkpoint"]),
                                    Manifest.load(shards), False, done)
    assert status_when_written == ["RUNNING"] and json.loads(done.read_text()) == summary
    assert client(uri).get_run(run_id).info.status == "FINISHED"

    client(uri).update_run(teacher["mlflow_run_id"], status="RUNNING")  # the module's teacher, as if killed between
    again = run_training("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir), progress=False)
    assert again["mlflow_run_id"] == teacher["mlflow_run_id"]
    assert client(uri).get_run(teacher["mlflow_run_id"]).info.status == "FINISHED"


def test_finalizing_a_run_again_registers_no_second_version(teacher, shards, workdir):
    """A job resumed after a kill during its finalization, or a sweep command run again, finalizes the same run
    twice: the model is registered once."""
    from structvpr.platform.jobs.finalize import finalize_run
    from structvpr.platform.store.tracking import start_or_resume_run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    recipe = load_recipe("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir))
    run_id = start_or_resume_run(uri, "finalize-twice", "finalize-twice", {}, {})
    result = finished_training(teacher["checkpoint"])
    first, again = (finalize_run(recipe, "finalize-twice", run_id, uri, result, Manifest.load(shards), False)
                    for _ in range(2))
    assert first["registered_model"] == again["registered_model"] is not None
    assert len(client(uri).search_model_versions(f"name='structvpr-teacher' and run_id='{run_id}'")) == 1


def test_the_summary_counts_every_epoch_and_names_the_best_one(teacher, shards, workdir, tmp_path):
    """The summary's `epochs` was the best checkpoint's epoch: a 10-epoch job whose best was epoch 2 printed
    "2 epochs". Now `epochs` counts what trained (the last checkpoint's history) and `best_epoch` names the best."""
    import torch

    from structvpr.platform.jobs.finalize import finalize_run
    from structvpr.platform.jobs.ray_trainer import SCORE
    from structvpr.platform.store.tracking import start_or_resume_run

    state = load_state(teacher["checkpoint"])
    epochs = [dict(state["history"][-1], epoch=e) for e in (1, 2, 3)]
    folders = {}
    for name, epoch in (("best", 1), ("last", 3)):  # the best checkpoint holds the history up to it
        folders[name] = tmp_path / name
        folders[name].mkdir()
        torch.save(state | {"epoch": epoch, "history": epochs[:epoch]}, folders[name] / "state.pt")
    result = SimpleNamespace(best_checkpoints=[(SimpleNamespace(path=str(folders["best"])), {SCORE: 1.0})],
                             checkpoint=SimpleNamespace(path=str(folders["last"])))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    recipe = load_recipe("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir, "tracking.register=false"))
    run_id = start_or_resume_run(uri, "best-of-three", "best-of-three", {}, {})
    summary = finalize_run(recipe, "best-of-three", run_id, uri, result, Manifest.load(shards), False)
    assert (summary["epochs"], summary["best_epoch"], summary["checkpoint"]) == (3, 1, str(folders["best"]))


@pytest.fixture(scope="module")
def ranked_teacher(teacher, shards, workdir):
    """The same teacher recipe with folds=2: the full teacher is reused, two fold teachers rank its views. As a
    user's command first, SIGKILLed once a fold teacher has finished; then the same recipe again finishes."""
    args = overrides(shards, workdir, "folds=2")
    finished = kill_once_a_fold_finishes(args, workdir / "ckpt")
    summary = run_training("teacher", "configs/tiny/teacher.yaml", args, progress=False)
    return summary | {"finished_before_kill": finished}


def kill_once_a_fold_finishes(args: list[str], storage, timeout: float = 600) -> dict[str, str]:
    """Run `structvpr train teacher` in a process of its own, SIGKILL it (and its group) as soon as a fold job
    has written its summary; {summary file: its text} of the fold jobs finished by then."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    command = subprocess.Popen([sys.executable, "-m", "structvpr", "-q", "train", "teacher", "--config",
                                "configs/tiny/teacher.yaml", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not (done := sorted(storage.glob(f"*-fold*of2-*/{DONE_FILE}"))):
        assert command.poll() is None, "the command ended before any fold finished:\n" + command.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no fold teacher finished in time"
        time.sleep(0.2)
    finished = {str(path): path.read_text() for path in done}
    os.killpg(command.pid, signal.SIGKILL)
    command.wait(timeout=60)
    return finished


def test_folds_write_a_ranks_table_beside_the_full_teacher(teacher, ranked_teacher, shards, workdir):
    from structvpr.platform.ranking.folds import training_views
    from structvpr.platform.ranking.table import MANIFEST_TAG, RanksTable

    assert ranked_teacher["checkpoint"] == teacher["checkpoint"], "folds=K must not retrain the full teacher"
    manifest = Manifest.load(shards)
    table = RanksTable.read(ranked_teacher["ranks_table"])
    assert table.manifest_hash == manifest.hash
    assert sorted((r.place, r.view) for r in table.rows) == sorted((v.place, v.view) for v in training_views(manifest))
    assert {r.fold for r in table.rows} == {0, 1} and min(r.r_t for r in table.rows) == 1
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    run_id = teacher["mlflow_run_id"]
    assert c.get_run(run_id).data.tags[MANIFEST_TAG] == manifest.hash
    assert {"ranks/ranks.csv", "ranks/rank_histogram.png", "ranks/noisiest.png"} <= {a.path for a in c.list_artifacts(run_id, "ranks")}
    version = c.get_model_version("structvpr-teacher", str(teacher["registered_model"]))
    assert version.tags["structvpr.ranks"] == ranked_teacher["ranks_artifact"] == f"runs:/{run_id}/ranks/ranks.csv"
    folds = c.search_runs([c.get_run(run_id).info.experiment_id], filter_string="tags.`structvpr.fold_of` != ''")
    assert sorted(r.data.tags["structvpr.fold"] for r in folds) == ["0", "1"], [(r.info, r.data.tags) for r in folds]
    assert all(r.info.status == "FINISHED" and r.data.params["fold"] in ("0", "1") for r in folds)


def test_a_killed_fold_command_resumes_without_training_a_finished_fold_again(ranked_teacher, workdir):
    finished = ranked_teacher["finished_before_kill"]
    assert finished
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    for path, text in finished.items():
        assert Path(path).read_text() == text, "a fold that had finished must be read back, not trained again"
        fold = json.loads(text)
        # trained again, it would have opened a second MLflow run of that name (the first one is finished)
        runs = c.search_runs([c.get_run(fold["mlflow_run_id"]).info.experiment_id],
                             filter_string=f"tags.`mlflow.runName` = '{fold['run_name']}'")
        assert [r.info.run_id for r in runs] == [fold["mlflow_run_id"]]
        assert [m.step for m in c.get_metric_history(fold["mlflow_run_id"], "val_recall_at_1")] == [1, 2]


def test_folds_again_train_and_rank_nothing(ranked_teacher, shards, workdir, capsys):
    again = run_training("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir, "folds=2"), progress=False)
    assert again["ranks_table"] == ranked_teacher["ranks_table"]
    assert "ranks table already written" in capsys.readouterr().out


def test_weighted_student_reads_the_out_of_fold_ranks(teacher, ranked_teacher, shards, workdir, monkeypatch, capsys):
    """r_T from the ranks table, KD targets from the fold teachers' logged models. The teacher named by runs:/ and its
    ranks by models:/ (both kinds of reference in one job: each job costs about 30 s here). Plain KD and the full
    teacher's KD targets: the demo's students (tests/test_cli.py)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    summary = run_training("student", "configs/tiny/student.yaml", overrides(
        shards, workdir, f"teacher=runs:/{teacher['mlflow_run_id']}/model", "kd.mode=weighted", "kd.ranks=out_of_fold",
        f"kd.teacher_ranks=models:/structvpr-teacher/{teacher['registered_model']}", "kd.teacher_source=folds"),
        progress=True)
    # The driver's bar, fed by rank 0 through the progress board, reaches the last step (2 epochs x 2 batches).
    bar = capsys.readouterr().err
    assert "4/4" in bar, bar[-2000:]
    assert "Reporting training result" not in bar, "run.log_level (WARNING) must quiet Ray Train's report lines"
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    metrics = c.get_run(summary["mlflow_run_id"]).data.metrics
    groups = ("noisy", "teacher_right_student_wrong", "both_right", "other")
    assert sum(metrics[f"group_{g}"] for g in groups) == 2 * 4 * 2
    per_condition = {k: v for k, v in metrics.items() if k.startswith("group_") and "." in k}
    assert per_condition and sum(per_condition.values()) == 2 * 4 * 2, "every sample is counted under its condition"
    assert "weighting_groups.png" in {a.path for a in c.list_artifacts(summary["mlflow_run_id"])}
    assert metrics["train_kd"] > 0 and "best_val_recall_at_1" in metrics
    assert load_state(summary["checkpoint"])["spec"]["in_chans"] == 3


def test_eval_command_on_a_checkpoint(teacher, shards, tmp_path, capsys):
    from structvpr.platform.evaluation.command import run_eval

    assert run_eval(teacher["checkpoint"], str(shards), split="test", out=str(tmp_path / "eval"), progress=False) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed and "night" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["recall_at_1"] <= 100
    assert (tmp_path / "eval" / "retrievals.png").stat().st_size > 1000


def test_recipe_mistakes_fail_before_any_ray_work(shards, workdir):
    with pytest.raises(ConfigError, match="train.epoch"):
        load_recipe("teacher", "configs/tiny/teacher.yaml", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="scaling.num_workers must be int"):
        load_recipe("teacher", "configs/tiny/teacher.yaml", ["scaling.num_workers=two"])
    with pytest.raises(DatasetError, match="no manifest.json"):
        run_training("teacher", "configs/tiny/teacher.yaml", overrides(workdir / "nowhere", workdir), progress=False)
    with pytest.raises(ConfigError, match="needs `teacher`"):
        load_recipe("student", "configs/tiny/student.yaml", [f"data.shards={shards}"])


def test_shards_without_a_val_split_are_refused(tiny_city, tmp_path, workdir):
    only_train = tmp_path / "only-train"
    build_shards("vg", tiny_city, only_train, BuildOptions(image_size=(64, 48), progress=False, splits=("train",)))
    with pytest.raises(DatasetError, match="val set .* has no database images"):
        run_training("teacher", "configs/tiny/teacher.yaml", overrides(only_train, workdir), progress=False)


def test_teacher_of_another_image_size_is_refused(teacher, tiny_city, tmp_path, workdir):
    other = tmp_path / "shards80"
    build_shards("vg", tiny_city, other, BuildOptions(image_size=(80, 60), progress=False, splits=("train", "val")))
    with pytest.raises(ModelSourceError, match="64x48.*80x60"):
        run_training("student", "configs/tiny/student.yaml",
                     overrides(other, workdir, f"teacher={teacher['checkpoint']}"), progress=False)


def test_eval_command_names_a_model_it_cannot_load(shards, capsys):
    from structvpr.cli import main

    assert main(["eval", "--model", "/nonexistent/model", "--shards", str(shards)]) == 2
    assert "model '/nonexistent/model' not found" in capsys.readouterr().err


def test_use_gpu_on_a_cluster_without_gpus_is_refused(shards, workdir):
    from structvpr.platform.jobs.resources import NoGpuError

    with pytest.raises(NoGpuError, match="scaling.use_gpu=true but the Ray cluster has no GPU"):
        run_training("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir, "scaling.use_gpu=true",
                                                                       "run.name=gpu-refused"), progress=False)


def test_train_seed_fixes_the_initial_weights(shards, workdir):
    """Two jobs of one recipe start from the same weights; another seed, other weights. (The seed used to reach
    only the batches: the same sweep trial config, seed 0, trained to val R@1 35.4 in one sweep and 22.9 in another.)"""
    import torch

    from structvpr.platform.jobs import train_loop
    from structvpr.platform.jobs.job_kind import job_kind

    def initial_weights(seed: int, global_seed: int) -> list[torch.Tensor]:
        recipe = load_recipe("teacher", "configs/tiny/teacher.yaml", overrides(shards, workdir, f"train.seed={seed}"))
        job = train_loop.Job(recipe, job_kind(recipe), 0, 1, torch.device("cpu"), Manifest.load(shards), "", "")
        torch.manual_seed(global_seed)  # what the global generator holds before must not matter
        model, _, _ = train_loop.build_model(job, prepare=lambda m: m)
        return [p.detach().clone() for p in model.parameters()]

    first, again, other = initial_weights(0, global_seed=1), initial_weights(0, global_seed=2), initial_weights(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_a_training_epoch_under_bf16_autocast(shards, workdir):
    """The AMP path (bf16 autocast) of train_epoch, run on the CPU: what a GPU job runs, less CUDA's kernels.

    Job.amp is on only on CUDA; a Job whose amp is forced on lets the CPU check the dtypes of the
    losses, the KD and the weighting under autocast.
    """
    import math

    import torch

    from structvpr.platform.jobs import train_loop
    from structvpr.platform.jobs.data import training_loader
    from structvpr.platform.jobs.job_kind import job_kind
    from structvpr.platform.losses import MetricLoss
    from structvpr.platform.models import create_branch

    class AmpOnTheCpu(train_loop.Job):
        amp = True

    recipe = load_recipe("student", "configs/tiny/student.yaml",
                         overrides(shards, workdir, "teacher=built-here", "kd.mode=weighted"))
    torch.manual_seed(0)
    teacher = create_branch("test_resnet", 8, "gem", 32, image_hw=(48, 64), num_classes=8).eval()
    job = AmpOnTheCpu(recipe, job_kind(recipe), 0, 1, torch.device("cpu"), Manifest.load(shards), "", "", teacher=teacher)
    model, optimizer, scheduler = train_loop.build_model(job, prepare=lambda m: m)
    gallery = train_loop.refresh_gallery(job, model)
    seen = []
    real = train_loop.batch_loss

    def recorded(*args):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*args)

    train_loop.batch_loss = recorded
    try:
        stats = train_loop.train_epoch(job, model, optimizer, scheduler, MetricLoss(), gallery,
                                       training_loader(recipe, 0, 1))
    finally:
        train_loop.batch_loss = real
    assert seen == [True, True] and all(math.isfinite(v) for v in stats.values()), stats
    assert stats["train_kd"] > 0 and sum(stats[f"group_{g}"] for g in ("noisy", "teacher_right_student_wrong",
                                                                       "both_right", "other")) == 2 * 4 * 2
