"""One trial of a sweep: a student Ray Train job with the sampled values, its epochs reported to Ray Tune.

The Tune function trainable builds and fits a TorchTrainer (Ray 2.60, Train V2: Tune cannot take a
trainer itself); `TuneReportCallback` forwards every epoch's report, which carries the metric and
the epoch (ASHA's time attribute). The Train run is named after the trial id, with no timestamp, so a
restored trial finds its own checkpoints and resumes, and its MLflow child run is reused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from structvpr.config import flatten, from_dict
from structvpr.platform.recipe import Recipe
from structvpr.tuning.space import apply

PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
SWEEP_TAG = "structvpr.sweep"
TRIAL_TAG = "structvpr.trial_id"


@dataclass(frozen=True)
class SweepContext:
    """What every trial shares: the base recipe, the sweep's name and parent run, and the driver's inputs."""

    recipe: dict  # the base recipe as a mapping (asdict)
    name: str
    tracking_uri: str
    parent_run_id: str
    worker_inputs: dict  # e.g. the out-of-fold ranks table, read once by the driver


def trial_run_name(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def trial_recipe(context: SweepContext, values: dict, trial_id: str) -> Recipe:
    recipe = from_dict(Recipe, apply(context.recipe, values))
    recipe.run.name = trial_run_name(context.name, trial_id)
    recipe.tracking.register = False  # only the best trial's model is registered, at the end (--register-best)
    return recipe


def name_this_cluster_for_train() -> None:
    """Let Ray Train's PlacementGroupCleaner find this cluster when Tune stops a trial.

    When ASHA stops a trial, Tune kills the trial's actor and with it the Train controller; a detached
    PlacementGroupCleaner then frees the trial's workers. It finds the cluster by autodetection
    (ray 2.60), which fails when another Ray instance runs on the machine ("Found multiple active Ray
    instances"): the stopped trial's workers keep their CPUs and the next trial never gets its own.
    RAY_ADDRESS names the cluster; Train propagates the variables in its list from the trial to the
    controller, whose children (the cleaner) inherit them."""
    import os

    import ray
    from ray.train.v2._internal import constants

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    constants.ENV_VARS_TO_PROPAGATE.add("RAY_ADDRESS")


def run_trial(values: dict, context: SweepContext) -> None:
    """The Tune function trainable (bound to the sweep's context with tune.with_parameters)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from structvpr.platform.jobs.ray_trainer import build_trainer
    from structvpr.platform.store.tracking import start_or_resume_run

    name_this_cluster_for_train()
    trial_id = tune.get_context().get_trial_id()
    recipe = trial_recipe(context, values, trial_id)
    run_id = start_or_resume_run(context.tracking_uri, recipe.tracking.experiment, recipe.run.name,
                                 flatten(asdict(recipe)), tags={PARENT_TAG: context.parent_run_id, SWEEP_TAG: context.name,
                                                                TRIAL_TAG: trial_id, "structvpr.kind": "student"})
    trainer = build_trainer(recipe, recipe.run.name, run_id, context.tracking_uri,
                            worker_inputs=context.worker_inputs, callbacks=[TuneReportCallback()])
    trainer.fit()
