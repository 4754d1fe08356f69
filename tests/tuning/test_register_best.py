"""--register-best takes the best trial's checkpoint from Ray Train's own record, not from Tune's per-epoch rows.

A real Tune trial runs a real TorchTrainer with the platform's checkpoint settings (keep 2 by val recall@1):
the epoch with the lowest training loss has the worst recall, so Train deletes its checkpoint, while Tune's
row for it still names the folder. A sweep ranked by train_loss once failed here with "no state.pt at".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from structvpr.platform.jobs.finalize import best_checkpoint_path
from structvpr.platform.jobs.ray_trainer import SCORE
from structvpr.tuning.report import kept_checkpoints

# (val recall@1, train loss) per epoch: epoch 2 is the best by loss and the worst by recall.
REPORTS = [(50.0, 3.0), (40.0, 1.0), (45.0, 2.0)]
RUN_NAME = "sweep-test-trial"


def train_loop(config):
    import ray.train
    import torch

    for epoch, (recall, loss) in enumerate(config["reports"], 1):
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"epoch": epoch}, Path(folder) / "state.pt")
            ray.train.report({"epoch": epoch, SCORE: recall, "train_loss": loss},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))


def trial(values, storage=None):
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from structvpr.platform.jobs.ray_trainer import checkpoint_config
    from structvpr.tuning.trial import name_this_cluster_for_train

    name_this_cluster_for_train()
    TorchTrainer(train_loop, train_loop_config={"reports": REPORTS},
                 scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
                 run_config=ray.train.RunConfig(name=RUN_NAME, storage_path=storage,
                                                checkpoint_config=checkpoint_config(2),
                                                callbacks=[TuneReportCallback()])).fit()


@pytest.fixture(scope="module")
def tune_rows(tmp_path_factory):
    """The module's own local Ray, shut down after it: the sweep tests after it run `python -m structvpr`
    processes with Rays of their own, and an idle one here would take CPU from them (docs/TESTING.md)."""
    import sys

    import ray
    from ray import cloudpickle, tune

    started_here = not ray.is_initialized()  # in one pytest run with other areas: theirs, left running
    if started_here:
        # as tests/conftest.py starts it: Ray Train's placement-group cleaner asks the dashboard's state API
        ray.init(address="local", num_cpus=2, include_dashboard=True)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
    storage = str(tmp_path_factory.mktemp("register-best"))
    tuner = tune.Tuner(tune.with_resources(tune.with_parameters(trial, storage=storage), {"cpu": 0.05}),
                       run_config=tune.RunConfig(name="tune", storage_path=storage, verbose=0))
    try:
        (result,) = tuner.fit()
        assert result.error is None, result.error
        yield storage, result.metrics_dataframe
    finally:
        if started_here:
            ray.shutdown()


def test_the_row_best_by_loss_names_a_checkpoint_train_deleted(tune_rows):
    _, rows = tune_rows
    best_by_loss = rows.loc[rows["train_loss"].idxmin()]
    assert best_by_loss["epoch"] == 2
    assert not (Path(best_by_loss["checkpoint_path"]) / "state.pt").exists()  # what registering used to read


def test_kept_checkpoints_gives_the_best_existing_checkpoint(tune_rows):
    import torch

    storage, _ = tune_rows
    path = best_checkpoint_path(kept_checkpoints(storage, RUN_NAME))
    assert torch.load(Path(path) / "state.pt", weights_only=True)["epoch"] == 1  # best val recall@1, and there


def test_a_trial_without_a_train_record_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"has no record of its checkpoints.*best_recipe.yaml"):
        kept_checkpoints(str(tmp_path), "sweep-x-gone")
