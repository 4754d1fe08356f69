"""`structvpr tune --config FILE [key=value ...] [--register-best]`: run (or resume) a sweep, then report it."""

from __future__ import annotations

import math
from dataclasses import asdict

from structvpr.tuning.sweep import TRIAL_CPU, Sweep, build_tuner, concurrent_trials, load_sweep, parent_params
from structvpr.tuning.trial import SweepContext


def progress_callback(sweep: Sweep, enabled: bool = True):
    """A Tune callback drawing one bar on the driver: trials done of num_samples, running, stopped, best so far."""
    from ray.tune import Callback
    from tqdm import tqdm

    class SweepProgress(Callback):
        def __init__(self):
            self.bar = tqdm(total=sweep.tune.num_samples, desc=f"sweep {sweep.name}", unit="trial", disable=not enabled)
            self.running, self.stopped, self.failed, self.best = set(), 0, 0, math.nan
            self.last_epoch = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last_epoch[trial.trial_id] = result.get("epoch", 0)
            value = result.get(sweep.tune.metric)
            if value is not None and (math.isnan(self.best) or _better(value, self.best, sweep.tune.mode)):
                self.best = value
            self._show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.stopped += self.last_epoch.get(trial.trial_id, 0) < sweep.recipe.train.epochs
            self._done(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed += 1
            self._done(trial)

        def _done(self, trial):
            self.running.discard(trial.trial_id)
            self.bar.update(1)
            self._show()

        def _show(self):
            self.bar.set_postfix(running=len(self.running), stopped=self.stopped, failed=self.failed,
                                 best=f"{self.best:.2f}")

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return SweepProgress()


def _better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best


def run_sweep(config: str | None, overrides: list[str], register_best: bool = False, progress: bool = True) -> dict:
    from structvpr.platform.jobs.launcher import student_inputs
    from structvpr.platform.jobs.resources import check_cluster_fits
    from structvpr.platform.store.tracking import finish_run, resolve_tracking_uri, start_or_resume_run
    from structvpr.runtime import ensure_ray
    from structvpr.tuning.report import log_report, mark_child_runs, register_best as register, trial_rows

    sweep = load_sweep(config, overrides)
    inputs = student_inputs(sweep.recipe, sweep.manifest)  # the ranks table, read and checked once
    ensure_ray()
    check_cluster_fits(sweep.recipe, TRIAL_CPU)  # a trial the cluster can never hold is refused before any starts
    concurrency = concurrent_trials(sweep)
    uri = resolve_tracking_uri(sweep.recipe.tracking.uri)
    parent = start_or_resume_run(uri, sweep.recipe.tracking.experiment, sweep.name, parent_params(sweep, concurrency),
                                 tags={"structvpr.kind": "sweep"})
    print(f"sweep {sweep.name}: {sweep.tune.num_samples} trials, {concurrency} at a time; MLflow parent run {parent} "
          f"at {uri}; Tune experiment {sweep.path}", flush=True)
    context = SweepContext(asdict(sweep.recipe), sweep.name, uri, parent, inputs)
    results = build_tuner(sweep, context, [progress_callback(sweep, progress)]).fit()
    stop_if_interrupted(sweep, uri, parent)
    rows = mark_child_runs(trial_rows(results, sweep), sweep, uri, parent)
    log_report(sweep, context, rows)
    finish_run(uri, parent)  # the sweep's record is complete before a registration that might fail
    version = register(sweep, context, rows[0]) if register_best and rows and rows[0]["status"] != "error" else None
    print_summary(sweep, rows, version)
    return {"sweep": sweep.name, "parent_run_id": parent, "trials": rows, "registered_model": version}


class SweepInterrupted(Exception):
    """Tune ended the run before every trial had ended (Ctrl-C): the sweep is saved, not finished."""


def stop_if_interrupted(sweep: Sweep, uri: str, parent: str) -> None:
    """Tune answers Ctrl-C by saving the sweep, stopping its trials and returning from fit() as if it had ended;
    reporting and registering then would publish an unfinished sweep's best trial as its result (and the demo
    would keep the stage as done). fit()'s results cannot tell: the trials it stopped read TERMINATED there. Its
    last save, made before it stopped them, still has them running."""
    from structvpr.platform.store.tracking import finish_run
    from structvpr.tuning.report import end_interrupted_child_runs

    ended = ended_trials_as_saved(sweep)
    if ended >= sweep.tune.num_samples:
        return
    finish_run(uri, parent, status="KILLED")  # still resumable: a run that is not FINISHED is reused
    stopped = end_interrupted_child_runs(sweep, uri, parent)
    raise SweepInterrupted(
        f"sweep {sweep.name} was interrupted with {ended} of {sweep.tune.num_samples} trials ended: nothing was "
        f"reported or registered, and its MLflow parent run {parent} is marked KILLED, as are the runs of the trials "
        f"it stopped ({stopped}). Run the same command again to resume it (Tune restores {sweep.path}; finished "
        f"trials are not run again).")


def ended_trials_as_saved(sweep: Sweep) -> int:
    """Trials finished, stopped by the scheduler or failed, in the sweep's state as Tune last saved it."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    return sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in ExperimentAnalysis(str(sweep.path)).trials)


def print_summary(sweep: Sweep, rows: list[dict], version) -> None:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "stopped", "error")}
    print(f"sweep {sweep.name}: {counts['finished']} finished, {counts['stopped']} stopped early, {counts['error']} failed")
    if rows and not math.isnan(rows[0]["best"]):
        values = ", ".join(f"{k}={rows[0][k]}" for k in sweep.space)
        print(f"best trial {rows[0]['trial_id']}: {sweep.tune.metric}={rows[0]['best']:.2f} ({values})")
    if version:
        print(f"registered as structvpr-student version {version}")
