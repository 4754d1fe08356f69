"""`structvpr tune`: a Ray Tune sweep of student trials, with an MLflow parent run, resumable after a dead driver.

Everything that can be checked is checked before Ray starts (the recipe, the space at its corners,
the metric, the grace period, the shards and eval shards, the teacher and its ranks table, the cluster's size).
The sweep is named from its recipe and `tune:` section, so the same command finds its own Tune
experiment under `run.storage_path` and restores it (`Tuner.can_restore` / `Tuner.restore`):
finished trials are kept, unfinished ones resume from their checkpoints, and the MLflow parent run
is the same one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from structvpr.config import ConfigError, flatten, from_dict, load_mapping
from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.jobs.single_job import absolute_paths, check_inputs
from structvpr.platform.recipe import Recipe, name_settings
from structvpr.tuning.section import TuneSection
from structvpr.tuning.space import parse_points, parse_space, tune_domains
from structvpr.tuning.trial import SweepContext, run_trial

TRIAL_CPU = 0.05  # each trial's own Tune actor holds a little CPU while its Train workers run
TRAIN_METRICS = ("train_loss", "train_metric_loss", "train_kd")


@dataclass
class Sweep:
    recipe: Recipe
    tune: TuneSection
    space: dict  # recipe key -> (distribution, args), checked
    manifest: Manifest

    @property
    def name(self) -> str:
        """Stable from the recipe and the tune section: the same command resumes the same sweep."""
        settings = {"recipe": name_settings(self.recipe), "tune": asdict(self.tune)}  # an empty eval.shards: unnamed
        settings["recipe"]["run"] = {}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"sweep-{digest}"

    @property
    def path(self) -> Path:
        return Path(self.recipe.run.storage_path) / self.name


def load_sweep(config: str | None, overrides: list[str]) -> Sweep:
    """The sweep recipe checked: a student recipe, its tune section, its space against the recipe, the metric."""
    data = load_mapping(config, ["kind=student", *overrides])
    tune_data = data.pop("tune", None)
    if tune_data is None:
        raise ConfigError(f"{config or 'the recipe'} has no tune: section; a sweep recipe is a student recipe with "
                          "tune.space, tune.num_samples, ... (see configs/tiny/tune.yaml)")
    section = from_dict(TuneSection, tune_data, "tune.")
    recipe = absolute_paths(from_dict(Recipe, data))
    space = parse_space(section.space, asdict(recipe))
    section.points_to_evaluate = parse_points(section.points_to_evaluate, space, asdict(recipe))
    check_metric(section, recipe)
    manifest = check_inputs(recipe)
    return Sweep(recipe, section, space, manifest)


def check_metric(section: TuneSection, recipe: Recipe) -> None:
    reported = [f"val_recall_at_{n}" for n in recipe.eval.n_values] + list(TRAIN_METRICS)
    if section.metric not in reported:
        raise ConfigError(f"tune.metric {section.metric!r} is not reported by the trials; choose one of "
                          f"{', '.join(reported)}")
    if section.scheduler.name == "asha" and section.scheduler.grace_period > recipe.train.epochs:
        raise ConfigError(f"tune.scheduler.grace_period ({section.scheduler.grace_period}) is longer than the "
                          f"training (train.epochs={recipe.train.epochs}): ASHA could never stop a trial")


def concurrent_trials(sweep: Sweep) -> int:
    """tune.max_concurrent_trials, else as many trials as the cluster holds at once: waiting trials would hold
    placement groups for workers that cannot start (and Tune's own actor per trial)."""
    from structvpr.platform.jobs.resources import jobs_fitting

    fitting = jobs_fitting(sweep.recipe, TRIAL_CPU)
    wanted = sweep.tune.max_concurrent_trials or fitting
    return max(1, min(wanted, fitting, sweep.tune.num_samples))


def build_tuner(sweep: Sweep, context: SweepContext, callbacks: list):
    """A new Tuner, or the one of an earlier run of the same sweep (restored, its unfinished trials resumed)."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": TRIAL_CPU})
    if tune.Tuner.can_restore(str(sweep.path)):
        print(f"resuming sweep {sweep.name} from {sweep.path}", flush=True)
        return tune.Tuner.restore(str(sweep.path), trainable, resume_unfinished=True, resume_errored=True)
    t = sweep.tune
    config = tune.TuneConfig(metric=t.metric, mode=t.mode, num_samples=t.num_samples, search_alg=searcher(t),
                             scheduler=scheduler(t, sweep.recipe.train.epochs),
                             max_concurrent_trials=concurrent_trials(sweep))
    run_config = tune.RunConfig(name=sweep.name, storage_path=sweep.recipe.run.storage_path, callbacks=callbacks,
                                verbose=0, failure_config=tune.FailureConfig(max_failures=sweep.recipe.run.max_failures))
    return tune.Tuner(trainable, param_space=tune_domains(sweep.space), tune_config=config, run_config=run_config)


def searcher(t: TuneSection):
    if t.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial would break the progress bar
        return OptunaSearch(seed=t.seed, points_to_evaluate=t.points_to_evaluate or None)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=t.seed, points_to_evaluate=t.points_to_evaluate or None)


def scheduler(t: TuneSection, epochs: int):
    if t.scheduler.name == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Time is the epoch each report carries: a restored trial goes on counting where it stopped.
    return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=t.scheduler.grace_period,
                         reduction_factor=t.scheduler.reduction_factor)


def parent_params(sweep: Sweep, concurrency: int) -> dict:
    """What the parent run records: the space, searcher, scheduler and the cluster the sweep ran on."""
    import ray

    params = flatten({"tune": {k: v for k, v in asdict(sweep.tune).items() if k != "space"}})
    params.update({f"space.{k}": json.dumps({name: args}) for k, (name, args) in sweep.space.items()})
    params.update({"cluster.cpus": ray.cluster_resources().get("CPU", 0), "cluster.gpus": ray.cluster_resources().get("GPU", 0),
                   "cluster.nodes": len([n for n in ray.nodes() if n.get("Alive")]), "max_concurrent_trials": concurrency})
    return params
