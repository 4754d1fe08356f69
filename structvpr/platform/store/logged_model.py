"""The model logged to an MLflow run and registered as a new version of structvpr-teacher / structvpr-student.

An MLflow pyfunc (models-from-code, structvpr/deploy/serving/served_model.py: JPEG bytes in, descriptors and
top-k places out) whose artifacts are the whole branch as data:
spec.json (create_branch's arguments), weights.safetensors (the state dict) and trained_on.json
(image size, shards, kind). `load_logged_branch` downloads just those three files and rebuilds the
branch: nothing in the artifact is unpickled or run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from torch import nn

from structvpr.platform.store.checkpoint import ModelSourceError, build_branch

REGISTERED_NAMES = {"teacher": "structvpr-teacher", "student": "structvpr-student"}
PIP_REQUIREMENTS = ["torch==2.14.1", "timm==1.0.31", "safetensors==0.8.0", "numpy"]
# The file MLflow runs to serve the model; referenced by path only (the store never imports serving).
SERVED_MODEL = Path(__file__).parents[2] / "deploy" / "serving" / "served_model.py"
FILES = {"spec": "spec.json", "weights": "weights.safetensors", "trained_on": "trained_on.json"}


def log_model(model: nn.Module, image_size: tuple[int, int], trained_on: dict, register_as_kind: str | None,
              segmenter: str | None = None):
    """Log `model` as "model" of the active run; registered as a new version when `register_as_kind` is set.

    segmenter: a segmentation checkpoint served with a teacher, which reads category maps of the images."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), model, {"image_size": list(image_size), **trained_on})
        artifacts = {k: str(p) for k, p in files.items()} | ({"segmenter": str(segmenter)} if segmenter else {})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(SERVED_MODEL), artifacts=artifacts, signature=served_signature(),
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=REGISTERED_NAMES[register_as_kind] if register_as_kind else None)
    return getattr(info, "registered_model_version", None)


def registered_version_of_run(kind: str, run_id: str) -> int | None:
    """The newest version of the kind's registered model made from this run (at the active tracking URI), if any."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient().search_model_versions(f"name='{REGISTERED_NAMES[kind]}' and run_id='{run_id}'")
    return max((int(v.version) for v in found), default=None)


def served_signature():
    """JPEG bytes in a binary `image` column (base64 in JSON), and top_k; one row of results per image."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, "image")]),
                          params=ParamSchema([ParamSpec("top_k", DataType.long, 5)]))


def write_files(folder: Path, model: nn.Module, trained_on: dict) -> dict[str, Path]:
    from safetensors.torch import save_file

    files = {k: folder / name for k, name in FILES.items()}
    files["spec"].write_text(json.dumps(model.spec))
    files["trained_on"].write_text(json.dumps(trained_on))
    # contiguous(): channels_last weights (a model for inference) are not, and safetensors stores dense rows.
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(files["weights"]))
    return files


def branch_from_files(spec_file: str | Path, weights_file: str | Path, source: str) -> nn.Module:
    """The branch from spec.json and weights.safetensors, read as data."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        spec = json.loads(Path(spec_file).read_text())
        weights = load_file(str(weights_file))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelSourceError(f"{source}: its {Path(spec_file).name} or {Path(weights_file).name} is unreadable "
                               f"({type(exc).__name__}); re-register it with this version of structvpr") from None
    return build_branch(spec, weights, source)


def load_logged_branch(ref: str) -> tuple[nn.Module, dict]:
    """The branch logged at runs:/<run id>/model or models:/<name>/<version|@alias>, and its trained_on."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: _download(ref, name, tmp) for k, name in FILES.items()}
        model = branch_from_files(paths["spec"], paths["weights"], ref)
        trained_on = _read_trained_on(paths["trained_on"], ref)
    return model, trained_on


def _download(ref: str, name: str, folder: str) -> str:
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=f"{ref.rstrip('/')}/artifacts/{name}", dst_path=folder)
    except Exception as exc:  # MLflow raises many types for a bad URI or a missing file; all mean the same to the user
        if _exists(ref):
            raise ModelSourceError(f"{ref} holds no {name}: a model logged by an older structvpr or not by structvpr, "
                                   "refused without loading it; re-register it with this version "
                                   "(`structvpr train` logs spec.json and weights.safetensors)") from None
        raise ModelSourceError(f"cannot load {ref} from MLflow at {mlflow.get_tracking_uri()}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _exists(ref: str) -> bool:
    import mlflow

    try:
        return bool(mlflow.artifacts.list_artifacts(artifact_uri=ref))
    except Exception:  # a reference MLflow cannot resolve
        return False


def _read_trained_on(path: str, ref: str) -> dict:
    try:
        trained_on = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        trained_on = None
    if not isinstance(trained_on, dict):
        raise ModelSourceError(f"{ref}: its trained_on.json is not a JSON object; re-register it with this version")
    return trained_on
