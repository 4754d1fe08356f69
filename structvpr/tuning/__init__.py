"""Ray Tune sweeps of the weighting thresholds."""
