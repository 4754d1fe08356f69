"""`structvpr demo`: the whole platform on the synthetic city, stage by stage, each finished stage kept.

city -> segmentation model -> shards (predicted and ground-truth segmentation) -> verify -> teacher with fold
teachers and out-of-fold ranks -> three students -> a sweep of the weighting -> evaluation -> gated promotion
of the best student -> a served query and latency -> report.md. Local Ray and a sqlite MLflow store in the
work folder (its own, whatever MLFLOW_TRACKING_URI says: the demo never writes to a team's server).
"""

from __future__ import annotations

import os
from pathlib import Path

from structvpr.demo.data_stages import data_stages
from structvpr.demo.deploy_stages import deploy_stages
from structvpr.demo.model_stages import evaluation_stage, model_stages, tracking_uri
from structvpr.demo.presets import preset_named
from structvpr.demo.stages import Stages

STAGE_COUNT = 14


def run_demo(workdir: str | Path, preset: str = "small", seed: int = 0, progress: bool = True) -> int:
    chosen = preset_named(preset)
    work = Path(workdir).resolve()
    check_arguments(work, seed)  # before anything is written: a refused demo leaves no folder behind
    work.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(work)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # model references (models:/...) resolve in the demo's own store
    stages = Stages(work, STAGE_COUNT, {"preset": chosen.name, "seed": seed})
    found = {"data": data_stages(stages, work, chosen, seed, progress)}
    found["models"] = model_stages(stages, work, chosen, seed, found["data"])
    found["evaluation"] = evaluation_stage(stages, work, found["data"], found["models"])
    found["deploy"] = deploy_stages(stages, work, found["models"], found["data"], chosen.queries_served)
    return finish(work, chosen.name, seed, found, stages)


def check_arguments(work: Path, seed: int) -> None:
    from structvpr.config import ConfigError

    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")
    if work.exists() and not work.is_dir():
        raise ConfigError(f"--workdir {work} is a file, not a folder: give a new or existing folder")


def finish(work: Path, preset: str, seed: int, found: dict, stages: Stages) -> int:
    from structvpr.demo.report import log_report, write_report

    print(f"\n== report", flush=True)
    report = write_report(work, preset, seed, found, stages.seconds, stages.wall_seconds())
    run_id = log_report(tracking_uri(work), work)
    champion = found["deploy"]["promotion"].get("champion")
    print(f"\nDone. Look at:\n  the report     {report} (plots beside it; also MLflow run {run_id})\n"
          f"  MLflow         mlflow ui --backend-store-uri {tracking_uri(work)}\n"
          f"  the champion   models:/structvpr-student@champion"
          + (f" (version {champion})" if champion else " (none: see the report's Promotion section)") +
          f"\n  serve it       MLFLOW_TRACKING_URI={tracking_uri(work)} mlflow models serve "
          "-m models:/structvpr-student@champion --env-manager local --port 5001")
    return 0
