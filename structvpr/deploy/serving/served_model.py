"""The pyfunc a logged branch is served as (MLflow models-from-code): JPEG bytes -> descriptors -> top-k places.

MLflow runs this file when it serves a model or loads it with mlflow.pyfunc; structvpr's own loader
(`load_logged_branch`) never does. What it reads and answers: structvpr/deploy/serving/served_localizer.py.
"""

from __future__ import annotations

import os

import mlflow.models
from mlflow.pyfunc import PythonModel


class PlaceRecognitionModel(PythonModel):
    """DataFrame with a binary `image` column -> one row per image: `descriptor`, and `places` with an index."""

    def load_context(self, context) -> None:
        from structvpr.deploy.serving.served_localizer import load_served_localizer

        self.localizer = load_served_localizer(context.artifacts, os.environ)

    def predict(self, context, model_input, params=None):
        from structvpr.deploy.serving.served_localizer import answer

        return answer(self.localizer, model_input, params or {})


mlflow.models.set_model(PlaceRecognitionModel())
