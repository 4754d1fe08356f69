"""After training: evaluate the best checkpoint, log plots, recipe and model to MLflow, register a new version."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from structvpr.config import dump_yaml
from structvpr.datasets.shards.manifest import manifest_hash
from structvpr.platform.jobs.evaluate import evaluate_branch, write_eval_artifacts
from structvpr.platform.jobs.state import branch_from_state, load_state
from structvpr.platform.recipe import Recipe
from structvpr.platform.tracking import finish_run, log_metrics

REGISTERED_NAMES = {"teacher": "structvpr-teacher", "student": "structvpr-student"}
PIP_REQUIREMENTS = ["torch==2.14.1", "timm==1.0.31"]


def best_checkpoint_path(result) -> str:
    from structvpr.platform.jobs.ray_trainer import SCORE

    scored = [(m.get(SCORE, float("-inf")), c) for c, m in (result.best_checkpoints or [])]
    if scored:
        return max(scored, key=lambda x: x[0])[1].path
    if result.checkpoint is None:
        raise RuntimeError("training finished without any checkpoint")
    return result.checkpoint.path


def finalize_run(recipe: Recipe, name: str, run_id: str, uri: str, result, manifest: dict, progress: bool = True) -> dict:
    import mlflow

    ckpt = best_checkpoint_path(result)
    state = load_state(ckpt)
    model = branch_from_state(state).for_inference()  # as it is served, and as it is logged
    model.trained_on = state.get("trained_on", {})
    report, _, queries = evaluate_branch(model, recipe.data.shards, recipe.eval.split, "cpu",
                                         recipe.eval.n_values, recipe.eval.radius_m, progress=progress)
    metrics = {f"best_{recipe.eval.split}_{k}": v for k, v in report.to_metrics().items()}
    log_metrics(uri, run_id, metrics, step=state["epoch"])
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        log_artifacts(recipe, report, len(queries.keys))
        version = log_model(recipe, model, manifest)
        mlflow.set_tags({"structvpr.eval_manifest": manifest_hash(recipe.data.shards), "structvpr.checkpoint": ckpt})
    finish_run(uri, run_id)
    summary = {"run_name": name, "mlflow_run_id": run_id, "checkpoint": ckpt, "epochs": state["epoch"],
               "metrics": metrics, "recall": report.recall, "registered_model": version}
    print(f"best {recipe.eval.split} recall: " + " ".join(f"R@{n}={v:.1f}" for n, v in report.recall.items()))
    return summary


def log_artifacts(recipe: Recipe, report, num_queries: int) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "recipe.yaml").write_text(dump_yaml(recipe))
        write_eval_artifacts(folder, report, recipe.data.shards, recipe.eval.split, num_queries)
        mlflow.log_artifacts(str(folder))


def log_model(recipe: Recipe, model, manifest: dict):
    """The pytorch flavour, pickled so it loads at any input size (pt2 export fixes the shape)."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    width, height = manifest["image_size"]
    channels = model.spec["in_chans"]
    example = np.zeros((1, channels, height, width), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                    signature=infer_signature(example, output), pip_requirements=PIP_REQUIREMENTS,
                                    registered_model_name=REGISTERED_NAMES[recipe.kind] if recipe.tracking.register else None)
    return getattr(info, "registered_model_version", None)
