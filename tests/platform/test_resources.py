"""Jobs the Ray cluster can never hold are refused before any MLflow run opens, instead of waiting forever."""

from __future__ import annotations

import time

import pytest

from structvpr.platform.jobs.launcher import run_training
from structvpr.platform.jobs.resources import ClusterTooSmallError, WorkerRequest, shortfall
from structvpr.platform.store.tracking import client

NODE = {"CPU": 2.0, "memory": 8 * 1024**3}
GPU_NODE = {"CPU": 8.0, "GPU": 2.0, "memory": 32 * 1024**3}


def request(workers, strategy="PACK", **bundle):
    return WorkerRequest({"CPU": 1.0, **bundle}, workers, strategy)


@pytest.mark.parametrize("req,nodes,fits", [
    (request(2), [NODE], True),
    (request(3), [NODE], False),
    (request(4, CPU=0.5), [NODE], True),
    (request(4), [NODE, NODE], True),  # PACK may still use several nodes
    (request(4, "STRICT_PACK"), [NODE, NODE], False),
    (request(2, "STRICT_SPREAD"), [NODE, NODE], True),
    (request(3, "STRICT_SPREAD"), [NODE, NODE], False),
    (request(1, GPU=1.0), [NODE], False),
    (request(2, GPU=1.0), [NODE, GPU_NODE], True),
    (request(3, GPU=1.0), [NODE, GPU_NODE], False),
    (request(1, memory=16 * 1024**3), [NODE], False),
    (request(1), [], False),
])
def test_shortfall_by_strategy(req, nodes, fits):
    assert (shortfall(req, nodes) is None) == fits


@pytest.mark.parametrize("req,nodes,fits", [
    (request(1, CPU=2.0), [NODE], False),  # a whole 2-core node for the worker leaves nothing for the trial's actor
    (request(1, CPU=2.0), [NODE, NODE], True),  # the actor on the other node
    (request(1, CPU=1.9), [NODE], True),
    (request(2, "STRICT_SPREAD", CPU=2.0), [NODE, NODE], False),
    (request(2, "STRICT_SPREAD", CPU=2.0), [NODE, NODE, NODE], True),
    (request(3, CPU=1.0), [NODE], False),  # the workers alone do not fit
])
def test_shortfall_with_a_tune_trial_actor_beside_the_workers(req, nodes, fits):
    assert (shortfall(req, nodes, beside_cpu=0.05) is None) == fits


def test_shortfall_says_what_is_missing():
    text = shortfall(request(8), [NODE])
    assert "8 worker(s) of 1 CPU each (PACK)" in text and "room for 2 worker(s)" in text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("resources")


def train(shards, workdir, *extra):
    return run_training("teacher", "configs/tiny/teacher.yaml",
                        [f"data.shards={shards}", f"run.storage_path={workdir / 'ckpt'}",
                         f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", "model.backbone=test_resnet", *extra],
                        progress=False)


def test_more_workers_than_the_cluster_holds_is_refused_at_once(tiny_shards, workdir):
    """scaling.num_workers=8 on the 2-CPU local instance used to retry the worker group forever."""
    started = time.monotonic()
    with pytest.raises(ClusterTooSmallError, match="8 worker"):
        train(tiny_shards, workdir, "scaling.num_workers=8", "run.name=too-many")
    assert time.monotonic() - started < 60
    experiment = client(f"sqlite:///{workdir / 'mlflow.db'}").get_experiment_by_name("structvpr")
    runs = client(f"sqlite:///{workdir / 'mlflow.db'}").search_runs([experiment.experiment_id]) if experiment else []
    assert not runs, "a refused job left an MLflow run behind"


def test_waiting_for_an_autoscaler_says_how_long_and_for_what(tiny_shards, workdir, capsys):
    with pytest.raises(ClusterTooSmallError, match=r"4096.0 GB memory.*waited [6-9] s for nodes"):
        train(tiny_shards, workdir, "scaling.num_workers=1", "scaling.memory_per_worker_gb=4096",
              "scaling.wait_for_resources_s=6", "run.name=waits")
    assert "waiting for the cluster to grow" in capsys.readouterr().out


def test_a_sweep_whose_trial_and_workers_overfill_every_node_is_refused_before_any_trial(tiny_shards, workdir):
    """configs/cpu/tune.yaml once asked for a 2-CPU worker on a 2-core machine: the worker fits, but each trial's
    Tune actor holds 0.05 CPU beside it, and every trial's worker group timed out waiting, over and over."""
    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.tuning.command import run_sweep

    from untrained_teacher import save_untrained_teacher

    teacher = save_untrained_teacher(workdir / "sweep-teacher", Manifest.load(tiny_shards), ranks=False)
    started = time.monotonic()
    with pytest.raises(ClusterTooSmallError, match=r"1 worker\(s\) of 2 CPU each .* 0.05 CPU beside them for the "
                                                   r"trial's own Tune actor.*scaling.cpus_per_worker"):
        run_sweep("configs/tiny/tune.yaml", [f"data.shards={tiny_shards}", f"teacher={teacher}", "kd.ranks=in_fold",
                                             "scaling.cpus_per_worker=2", f"run.storage_path={workdir / 'ckpt'}",
                                             f"tracking.uri=sqlite:///{workdir / 'sweep.db'}"], progress=False)
    assert time.monotonic() - started < 60
    assert not (workdir / "sweep.db").exists(), "a refused sweep opened an MLflow run"
