"""A sweep's rows and its child runs' statuses come from the runs' own MLflow histories where Tune missed a report.

Seen in tests/tuning/test_sweep.py: a trial that trained its 3 epochs (3 epochs in MLflow) read as stopped at
epoch 2, because Tune's record of it ended at epoch 2; and after a killed driver, a child run that no trial owned
any more, left RUNNING under the finished sweep.
"""

from __future__ import annotations

from types import SimpleNamespace

from structvpr.platform.store.tracking import RUN_NAME_TAG, client, experiment_id, log_metrics
from structvpr.tuning.report import HISTORY, STATUS_TAG, mark_child_runs, plot_curves, write_table

SWEEP = SimpleNamespace(name="records", recipe=SimpleNamespace(train=SimpleNamespace(epochs=3),
                                               tracking=SimpleNamespace(experiment="records")),
                        tune=SimpleNamespace(metric="train_loss", mode="min"))


def child(c, uri, parent: str, name: str, losses: list[float]) -> str:
    run = c.create_run(experiment_id(uri, "records"), run_name=name,
                       tags={RUN_NAME_TAG: name, "mlflow.parentRunId": parent})
    for epoch, loss in enumerate(losses, 1):
        log_metrics(uri, run.info.run_id, {"train_loss": loss}, step=epoch)
    return run.info.run_id


def row(name: str, status: str, losses: list[float]) -> dict:
    return {"trial_id": name, "status": status, "epochs": len(losses), "best": min(losses), "last": losses[-1],
            "run_name": name, HISTORY: [(float(e), v) for e, v in enumerate(losses, 1)]}


def test_rows_take_the_epochs_tune_missed_and_runs_no_trial_owns_are_ended_as_lost(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    parent = c.create_run(experiment_id(uri, "records"), run_name="sweep").info.run_id
    missed = child(c, uri, parent, "missed-last", [2.0, 1.5, 0.5])  # Tune saw epochs 1-2 only
    stopped = child(c, uri, parent, "stopped", [2.0, 1.9])  # ASHA stopped it after epoch 2
    orphan = child(c, uri, parent, "orphan", [2.1])  # its trial lost with the killed driver
    rows = mark_child_runs([row("stopped", "stopped", [2.0, 1.9]), row("missed-last", "stopped", [2.0, 1.5])],
                           SWEEP, uri, parent)

    assert [r["trial_id"] for r in rows] == ["missed-last", "stopped"], "best first, by the completed history"
    assert rows[0] | {"status": "finished", "epochs": 3, "best": 0.5, "last": 0.5} == rows[0]
    assert rows[0][HISTORY] == [(1.0, 2.0), (2.0, 1.5), (3.0, 0.5)], "curves.png draws the epoch Tune missed"
    assert rows[1]["status"] == "stopped" and rows[1]["epochs"] == 2
    runs = {run_id: c.get_run(run_id) for run_id in (missed, stopped, orphan)}
    assert [(runs[i].info.status, runs[i].data.tags[STATUS_TAG]) for i in (missed, stopped, orphan)] == [
        ("FINISHED", "finished"), ("KILLED", "stopped"), ("KILLED", "lost")]


def test_the_trials_table_leaves_the_histories_to_the_curves(tmp_path):
    rows = [row("a", "finished", [2.0, 1.0, 0.5]), row("b", "stopped", [2.5]) | {HISTORY: []}]  # b: no report
    assert plot_curves(rows, SWEEP, tmp_path / "curves.png").stat().st_size > 0
    table = write_table(rows[:1], tmp_path / "trials.csv").read_text().splitlines()
    assert table[0] == "trial_id,status,epochs,best,last,run_name"
    assert table[1] == "a,finished,3,0.5,0.5,a"
