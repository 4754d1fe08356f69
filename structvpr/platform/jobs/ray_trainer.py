"""Building and running the TorchTrainer: scaling, storage, checkpoint and failure settings from the recipe."""

from __future__ import annotations

import os
from dataclasses import asdict

from structvpr.platform.jobs.resources import WorkerRequest
from structvpr.platform.recipe import Recipe

SCORE = "val_recall_at_1"


def epoch_printer_cls():
    """A Ray Train callback printing one line per epoch, headed by the run's name (jobs may run at once); it
    runs in the controller, and Ray forwards its output."""
    from ray.train import UserCallback

    class EpochPrinter(UserCallback):
        def __init__(self, name: str):
            self.name = name

        def after_report(self, run_context, metrics, checkpoint):
            m = metrics[0] if metrics else {}
            shown = {k: v for k, v in m.items() if k in ("train_loss", "train_metric_loss", "train_kd", SCORE,
                                                          "val_recall_at_5", "epoch_seconds")}
            text = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
            print(f"{self.name} epoch {m.get('epoch', '?')}: {text}", flush=True)

    return EpochPrinter


def checkpoint_config(keep: int):
    """Ray Train keeps the `keep` best checkpoints by val recall@1, and the latest; it deletes the others."""
    import ray.train

    return ray.train.CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=SCORE, checkpoint_score_order="max")


def build_trainer(recipe: Recipe, name: str, run_id: str, tracking_uri: str, progress_file: str | None = None,
                  worker_inputs: dict | None = None, callbacks: list | None = None):
    """The TorchTrainer of one job; `callbacks` are added to the epoch printer (a sweep adds Tune's reporter)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from structvpr.platform.jobs.train_loop import train_loop_per_worker

    s = recipe.scaling
    resources = WorkerRequest.from_scaling(s).bundle
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": asdict(recipe), "run_id": run_id, "tracking_uri": tracking_uri,
                           "teacher_ref": recipe.teacher, "progress_file": progress_file,
                           "inputs": worker_inputs or {}},
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker=resources, placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name, storage_path=recipe.run.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=recipe.run.max_failures),
            checkpoint_config=checkpoint_config(recipe.run.keep_checkpoints),
            callbacks=[epoch_printer_cls()(name), *(callbacks or [])],
            logging_config=ray.train.LoggingConfig(log_level=recipe.run.log_level),
            worker_runtime_env={"env_vars": env},
        ),
    )


def fit(recipe: Recipe, name: str, run_id: str, tracking_uri: str, progress: bool = True, worker_inputs: dict | None = None):
    """Run the trainer on the Ray that run_training joined (ensure_ray), drawing the driver's progress bar."""
    from structvpr.platform.jobs.progress import DriverProgress, progress_path

    path = progress_path(recipe.run.storage_path, name)
    with DriverProgress(path, recipe.train.epochs, recipe.data.batches_per_epoch, f"{recipe.kind} {name}", progress):
        return build_trainer(recipe, name, run_id, tracking_uri, str(path) if progress else None, worker_inputs).fit()
