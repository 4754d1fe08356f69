"""Models, losses, weighting, Ray Train jobs, evaluation and tracking (see the training issue)."""
