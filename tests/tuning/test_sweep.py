"""`structvpr tune` end to end on the tiny city, as a user runs it: ASHA, MLflow parent and child runs, the
report, --register-best, a SIGKILLed driver resumed by the same command without training a finished trial again,
and a Ctrl-C that ends the command without reporting or registering an unfinished sweep.

The sweep runs as `python -m structvpr` processes, each on a Ray instance of its own: a sweep in the long-lived
test Ray of the whole session once hung there, and a user's sweep starts fresh too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from structvpr.platform.store.tracking import client

TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=3"]
EPOCHS = 3
# ASHA stops a trial whose metric is worse than a rung's cutoff. Left to the searcher, whether any of four trials
# is worse than an earlier one at its rung is chance, and more so after a restore, which starts the scheduler's
# rungs afresh (Tune does not save them): no trial was stopped in two of three runs. So the trials are given,
# ranked by training loss (continuous: no ties), which grows with lambda: the first (finished before the kill)
# is the best, two alike follow, then one with lambda 3 that ASHA must stop.
GOOD = "kd.weighting.good_rank: 1, kd.weighting.noisy_rank: 10"
POINTS = (f"[{{kd.lam: 0.3, kd.weighting.w_high: 2.0, {GOOD}}}, {{kd.lam: 1.0, kd.weighting.w_high: 2.5, {GOOD}}}, "
          f"{{kd.lam: 1.0, kd.weighting.w_high: 3.0, {GOOD}}}, {{kd.lam: 3.0, kd.weighting.w_high: 2.0, {GOOD}}}]")
# ASHA's stop reaches a trial's workers some seconds after the report it judged; trial 4 once ran its last two
# epochs of 2 batches (about 1 s each) in that time, finished, and rightly read "finished". Epochs of 6 batches
# give the stop that time.
ASHA_MUST_STOP = ["tune.metric=train_loss", "tune.mode=min", f"tune.points_to_evaluate={POINTS}",
                  "data.batches_per_epoch=6"]


def structvpr(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-m", "structvpr", "--quiet", *args], env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sweeps")


def common(shards, workdir):
    return [f"data.shards={shards}", f"run.storage_path={workdir / 'ckpt'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            *TINY]


@pytest.fixture(scope="module")
def teacher(tiny_shards, workdir):
    """A teacher with random weights: the sweep machinery is under test, not the teacher (a trained one cost 48 s
    more). The KD term still grows with lambda, which is what orders the trials below."""
    from structvpr.datasets.shards.manifest import Manifest

    from untrained_teacher import save_untrained_teacher

    return save_untrained_teacher(workdir / "teacher", Manifest.load(tiny_shards), ranks=False)


def test_asha_sweep_survives_a_killed_driver_and_reports_to_mlflow(tiny_shards, workdir, teacher):
    # in-fold ranks: the sweep machinery is under test here, not the folds (tests/platform/test_jobs.py has those)
    cmd, env = structvpr("tune", "--config", "configs/tiny/tune.yaml", *common(tiny_shards, workdir),
                         f"teacher={teacher}", "kd.ranks=in_fold", "tune.num_samples=4", *ASHA_MUST_STOP,
                         "--register-best")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    finished_before = wait_for_finished_trial(c, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming sweep" in again.stdout
    parents = [r for r in c.search_runs([experiment(c)]) if r.data.tags.get("structvpr.kind") == "sweep"]
    assert len(parents) == 1, "the parent run must be reused"
    parent = parents[0]
    assert parent.info.status == "FINISHED" and "best_train_loss" in parent.data.metrics
    assert {"trials.csv", "curves.png", "parallel_coordinates.png", "best_recipe.yaml"} <= {
        a.path for a in c.list_artifacts(parent.info.run_id)}

    runs = c.search_runs([experiment(c)], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    # A trial started just before the kill can be missing from the state Tune restores; Tune then runs its point
    # again as another trial, and its first run is ended as lost (tests/tuning/test_trial_records.py).
    lost = [r for r in runs if r.data.tags.get("structvpr.trial_status") == "lost"]
    assert all(r.info.status == "KILLED" for r in lost) and len(lost) <= 1
    children = [r for r in runs if r not in lost]
    assert len(children) == 4
    status = {r.info.run_id: r.data.tags.get("structvpr.trial_status") for r in children}
    # Every trial ended (a stopped trial's workers freed: on 2 CPUs a leaked placement group starves the next trial)
    assert set(status.values()) <= {"finished", "stopped"}, status
    assert "stopped" in status.values(), "ASHA (grace 1, factor 2) must stop the trial with lambda 3"
    for child in children:
        assert child.info.status == {"finished": "FINISHED", "stopped": "KILLED"}[status[child.info.run_id]]
        steps = [m.step for m in c.get_metric_history(child.info.run_id, "val_recall_at_1")]
        # A trial in flight at the kill reruns from its last checkpoint, so it may log that epoch twice.
        assert sorted(set(steps)) == list(range(1, max(steps) + 1)), steps
        if status[child.info.run_id] == "finished":
            assert max(steps) == EPOCHS
    for run_id in finished_before:  # a finished trial is not run again: one report per epoch, once
        assert status[run_id] == "finished"
        assert [m.step for m in c.get_metric_history(run_id, "val_recall_at_1")] == list(range(1, EPOCHS + 1))
    registered = [v for v in c.search_model_versions("name='structvpr-student'")
                  if v.tags.get("structvpr.sweep") and v.run_id in status]
    assert len(registered) == 1, "--register-best registers the best trial once"


def test_a_sweep_interrupted_by_ctrl_c_says_so_and_reports_and_registers_nothing(tiny_shards, workdir, teacher):
    """Tune answers SIGINT by saving the sweep and returning as if it had ended; the command must not then report
    the unfinished sweep's best trial as its result, nor register it."""
    cmd, env = structvpr("tune", "--config", "configs/tiny/tune.yaml", *common(tiny_shards, workdir),
                         f"teacher={teacher}", "kd.ranks=in_fold", "tune.num_samples=1", "tune.scheduler.name=none",
                         "train.epochs=20", "tracking.experiment=interrupted", "--register-best")  # 20: still running
    logs = {name: (workdir / f"interrupted.{name}").open("w+") for name in ("out", "err")}  # files: a pipe can fill
    sweep = subprocess.Popen(cmd, env=env, stdout=logs["out"], stderr=logs["err"], text=True, start_new_session=True)
    c = client(f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        wait_for_trial_runs(c, "interrupted", sweep, bool, "no trial started in time")
        sweep.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
        sweep.wait(timeout=180)
    finally:
        stop_group(sweep)
        for log in logs.values():
            log.close()
    out, err = ((workdir / f"interrupted.{name}").read_text() for name in ("out", "err"))
    assert sweep.returncode == 130, out[-3000:] + err[-3000:]
    # fit()'s results call the trial Tune stopped TERMINATED, as if it had ended: the only trial, here
    assert "interrupted with 0 of 1 trials ended" in err and "Run the same command again" in err, err[-3000:]
    assert "best trial" not in out and "registered as" not in out, out[-3000:]
    runs = c.search_runs([c.get_experiment_by_name("interrupted").experiment_id])
    parent, = [r for r in runs if r.data.tags.get("structvpr.kind") == "sweep"]
    assert parent.info.status == "KILLED" and not c.list_artifacts(parent.info.run_id), "no report of an unfinished sweep"
    # the trial's run too, not left RUNNING until a resume (which reopens it)
    child, = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert (child.info.status, child.data.tags.get("structvpr.trial_status")) == ("KILLED", "interrupted"), child.info
    assert "as are the runs of the trials it stopped (1)" in err, err[-3000:]
    assert not [v for v in c.search_model_versions("name='structvpr-student'")
                if v.tags.get("structvpr.sweep") == parent.data.tags.get("mlflow.runName")]


def stop_group(process) -> None:
    """Whatever the test's own sweep process group left (its Ray), stopped by that group's id."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def experiment(c):
    return c.get_experiment_by_name("structvpr-tiny-tune").experiment_id


def wait_for_finished_trial(c, process) -> list[str]:
    """Run ids of the trials that reported their last epoch, as soon as there is one (and another has started)."""
    def finished(runs):
        done = [r.info.run_id for r in runs if r.data.metrics.get("epoch") == EPOCHS]
        return done if done and len(runs) > len(done) else None
    return wait_for_trial_runs(c, "structvpr-tiny-tune", process, finished, "no trial finished in time")


def wait_for_trial_runs(c, experiment_name: str, process, ready, failure: str, timeout: float = 600):
    """Polls the sweep's child runs (its trials) until `ready(runs)` gives something, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (process.stdout.read()[-3000:] if process.stdout  # a pipe: its output
                                        else f"the sweep ended with {process.returncode} too early")
        try:
            exp = c.get_experiment_by_name(experiment_name)
            runs = [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags] if exp else []
        except Exception:  # the store is not created yet
            runs = []
        found = ready(runs)
        if found:
            return found
        time.sleep(1)
    raise AssertionError(failure)
