"""MLflow tracking: one run per job (kept across restarts), metrics from rank 0, artifacts and models from the driver."""

from __future__ import annotations

import os
import time
from pathlib import Path

RUN_NAME_TAG = "structvpr.run_name"


def resolve_tracking_uri(configured: str = "") -> str:
    """The recipe's URI, else MLFLOW_TRACKING_URI, else a sqlite file in the working folder (the embedded default)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:"):
        # Without a server, artifacts live beside the sqlite file, not wherever the process happens to run.
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return c.create_experiment(name, artifact_location=artifacts)


def start_or_resume_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict) -> str:
    """The unfinished run of this job name if there is one (a restarted job keeps its run), else a new run."""
    c = client(uri)
    exp = experiment_id(uri, experiment)
    runs = c.search_runs([exp], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}' and attributes.status != 'FINISHED'",
                         max_results=1, order_by=["attributes.start_time DESC"])
    if runs:
        run_id = runs[0].info.run_id
        c.update_run(run_id, status="RUNNING")
        return run_id
    run = c.create_run(exp, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    c = client(uri)
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


def log_metrics(uri: str, run_id: str, metrics: dict, step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
    client(uri).log_batch(run_id, metrics=items)


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


def finish_if_left_running(uri: str, run_id: str) -> None:
    """A job whose summary was written but whose driver died before it ended the run: end it now. A store that
    cannot be reached only costs the status (the summary is what counts), so it is reported, not raised."""
    try:
        c = client(uri)
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, status="FINISHED")
    except Exception as exc:  # MLflow raises many kinds for an unreachable or changed store
        print(f"could not check MLflow run {run_id} at {uri}: {str(exc).splitlines()[0] if str(exc) else exc}")
