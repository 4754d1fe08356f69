"""The model store: checkpoint files, loading any model reference, MLflow runs, logged and registered models."""
