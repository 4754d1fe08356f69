"""The MLflow model registry: evaluation records, gated promotion of the `champion` alias, rollback, listings."""
