"""Training: models, losses and weighting, evaluation, the model store, and the Ray Train jobs (ARCHITECTURE.md)."""
