"""The `tune:` section of a sweep recipe: the search space, the searcher, the scheduler and the metric.

A sweep recipe is a student recipe with this section added; `tune.*` keys are overridden on the
command line like any recipe key (`tune.num_samples=3`). Everything here is checked before Ray starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SEARCHERS = ("optuna", "random")
SCHEDULERS = ("asha", "none")
MODES = ("max", "min")


@dataclass
class SchedulerSection:
    name: str = "asha"
    """asha: stop the trials that trail at each rung (time = epochs); none: every trial runs all its epochs."""
    grace_period: int = 1
    """Epochs every trial runs before ASHA may stop it."""
    reduction_factor: float = 2.0
    """ASHA keeps 1 / reduction_factor of the trials at each rung."""

    def __post_init__(self):
        if self.name not in SCHEDULERS:
            raise ValueError(f"tune.scheduler.name must be one of {', '.join(SCHEDULERS)}, got {self.name!r}")
        if self.grace_period < 1:
            raise ValueError(f"tune.scheduler.grace_period must be at least 1 epoch, got {self.grace_period}")
        if not math.isfinite(self.reduction_factor) or self.reduction_factor <= 1:
            raise ValueError(f"tune.scheduler.reduction_factor must be > 1, got {self.reduction_factor}")


@dataclass
class TuneSection:
    num_samples: int = 8
    """Trials of the sweep (public key: tune.num_samples)."""
    searcher: str = "optuna"
    """optuna (TPE) or random."""
    seed: int = 0
    """Seed of the searcher: the same seed proposes the same trials."""
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    metric: str = "val_recall_at_1"
    """What every trial reports each epoch and the sweep optimises."""
    mode: str = "max"
    max_concurrent_trials: int = 0
    """0: as many as the cluster holds at once (its CPUs / GPUs over one trial's workers)."""
    space: dict = field(default_factory=dict)
    """Recipe key -> distribution: {choice: [..]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]},
    {randint: [lo, hi]} (both ends included), {qrandint: [lo, hi, q]}, {quniform: [lo, hi, q]}."""
    points_to_evaluate: list = field(default_factory=list)
    """Trials to run first, in this order: each a mapping of every space key to a value (e.g. the recipe's
    defaults, to see them beside the search); the searcher proposes the remaining trials."""

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"tune.num_samples must be at least 1, got {self.num_samples}")
        if self.searcher not in SEARCHERS:
            raise ValueError(f"tune.searcher must be one of {', '.join(SEARCHERS)}, got {self.searcher!r}")
        if self.mode not in MODES:
            raise ValueError(f"tune.mode must be max or min, got {self.mode!r}")
        if self.max_concurrent_trials < 0:
            raise ValueError(f"tune.max_concurrent_trials must be >= 0, got {self.max_concurrent_trials}")
        if len(self.points_to_evaluate) > self.num_samples:
            raise ValueError(f"tune.points_to_evaluate holds {len(self.points_to_evaluate)} points, more than "
                             f"tune.num_samples ({self.num_samples})")
        if not self.space:
            raise ValueError("tune.space is empty: give at least one recipe key and its distribution, "
                             "e.g. kd.lam: {loguniform: [0.1, 10]}")
