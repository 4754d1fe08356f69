"""What the served model (served_model.py) loads and answers, kept here so that it can be read and tested.

Input: a DataFrame with a binary column `image` (in JSON, base64 strings, which MLflow's scoring
protocol decodes against the model's signature); param `top_k` (default 5). Output: one row per image,
`descriptor` (L2-normalised floats) and, with a place index, `places`: the top-k database images
(key, utm_east, utm_north, condition, score), best first. Bad input is an MlflowException with
INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400 and the message.

The place index: $STRUCTVPR_PLACE_INDEX (a folder or an MLflow artifact URI) when set; else the
`place_index/` that `structvpr index build` logged beside the model in its run; else none (descriptors
only). $STRUCTVPR_MAX_BATCH caps the images of one request (default 64).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from structvpr.deploy.serving.localizer import DEFAULT_MAX_BATCH, DEFAULT_TOP_K, Localizer, RequestError
from structvpr.deploy.serving.place_index import ARTIFACT_NAME, PlaceIndexError, load_place_index

INDEX_ENV = "STRUCTVPR_PLACE_INDEX"
MAX_BATCH_ENV = "STRUCTVPR_MAX_BATCH"


def _say(message: str) -> None:
    """One line in the server's log (stderr): which index it serves, or why none."""
    print(f"structvpr serving: {message}", file=sys.stderr, flush=True)


def load_served_localizer(artifacts: dict, environ) -> Localizer:
    from structvpr.platform.store.logged_model import branch_from_files

    model = branch_from_files(artifacts["spec"], artifacts["weights"], "the served model").for_inference()
    size = json.loads(Path(artifacts["trained_on"]).read_text()).get("image_size")
    if not size:
        raise PlaceIndexError("the served model does not record its image size (trained_on.json); re-register it")
    segmenter = _segmenter(artifacts.get("segmenter"), size)
    index = _place_index(model, environ.get(INDEX_ENV) or _own_index_uri(artifacts))
    return Localizer(model, tuple(size), index, segmenter, int(environ.get(MAX_BATCH_ENV) or DEFAULT_MAX_BATCH))


def _segmenter(path: str | None, size):
    if not path:
        return None
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor

    return SegmentationPredictor(path, device="cpu", image_size=tuple(size))


def _own_index_uri(artifacts: dict) -> str | None:
    """runs:/<the model's run>/place_index when that run holds one (MLmodel names the run)."""
    import mlflow
    import yaml

    mlmodel = Path(artifacts["spec"]).parents[1] / "MLmodel"  # artifacts sit in <model>/artifacts/
    run_id = yaml.safe_load(mlmodel.read_text()).get("run_id") if mlmodel.is_file() else None
    if not run_id:
        return None
    try:
        names = {Path(a.path).name for a in mlflow.artifacts.list_artifacts(run_id=run_id)}
    except Exception:  # a tracking server out of reach: serve descriptors, and say why below
        _say(f"could not look for a place index in run {run_id} at {mlflow.get_tracking_uri()}")
        return None
    return f"runs:/{run_id}/{ARTIFACT_NAME}" if ARTIFACT_NAME in names else None


def _place_index(model, ref: str | None):
    if not ref:
        _say(f"no place index (set {INDEX_ENV} or run `structvpr index build`): serving descriptors only")
        return None
    index = load_place_index(ref, model)
    _say(f"place index {ref}: {index.index.ntotal} places")
    return index


def answer(localizer: Localizer, frame, params: dict):
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if "image" not in getattr(frame, "columns", []):
        raise MlflowException.invalid_parameter_value(
            "send a column named 'image' holding base64 JPEGs: "
            '{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}')
    try:
        top_k = int(params.get("top_k", DEFAULT_TOP_K))
        if top_k < 1:
            raise RequestError(f"top_k must be at least 1, got {top_k}")
        descriptors, places = localizer.localize(list(frame["image"]), top_k)
    except RequestError as exc:
        raise MlflowException.invalid_parameter_value(str(exc)) from None
    rows = {"descriptor": [d.tolist() for d in descriptors]}
    if places is not None:
        rows["places"] = places
    return pd.DataFrame(rows)
