"""The pyfunc a logged branch is served as (MLflow models-from-code): spec.json + weights.safetensors -> descriptors.

MLflow runs this file when it logs or serves the model; structvpr's own loader (`load_branch`) never does.
"""

from __future__ import annotations

import mlflow.models
from mlflow.pyfunc import PythonModel


class BranchModel(PythonModel):
    """Preprocessed float input [B, C, H, W] -> L2-normalised descriptors [B, dim]."""

    def load_context(self, context) -> None:
        from structvpr.platform.store.logged_model import branch_from_files

        self.model = branch_from_files(context.artifacts["spec"], context.artifacts["weights"], "the served model")
        self.model.for_inference()

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(model_input, dtype=np.float32))).numpy()


mlflow.models.set_model(BranchModel())
