"""What each `structvpr demo --preset` runs: city size, segmentation epochs, shard size, recipes and sweep.

tiny: the test suite's (a few minutes, models too small to mean much); small: `make demo`'s default (under
20 minutes on 2 cores); full: the CPU-scale recipes of bench/bench_ablation.py (configs/cpu; hours), the
scale at which docs/METHOD.md reports the method's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the recipes shipped beside the package


@dataclass(frozen=True)
class Preset:
    name: str
    city: str  # generate_city preset
    seg: dict  # train_segmentation settings
    shard_size: tuple[int, int]  # (W, H) of the shards, the size every model trains at
    recipes: str  # folder under configs/ with teacher.yaml, student.yaml, tune.yaml
    folds: int  # fold teachers of the out-of-fold ranks
    sweep_trials: int
    train: list[str] = field(default_factory=list)  # overrides for every training job and trial
    sweep: list[str] = field(default_factory=list)  # overrides for the sweep only
    queries_served: int = 8  # test queries sent to the served champion


# 0.45 CPU a worker: the teacher and its fold teachers fit 2 cores at once, and then the three students and
# the sweep's trials (a trial's own actor holds 0.05 more; Ray queues what does not fit). On 2 cores that
# took as long as one job after another (each keeps the cores busy: docs/TESTING.md); on more cores, the
# time of one.
JOBS_AT_ONCE = "scaling.cpus_per_worker=0.45"
TINY_TRAIN = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
              "data.batches_per_epoch=2", "train.epochs=1", JOBS_AT_ONCE]

PRESETS = {
    "tiny": Preset("tiny", city="tiny", seg={"epochs": 1, "image_size": (80, 60)}, shard_size=(64, 48),
                   recipes="tiny", folds=2, sweep_trials=1, train=TINY_TRAIN,
                   sweep=["tune.scheduler.name=none"], queries_served=4),
    # The segmentation model trains at the shards' size: 4x cheaper than seg train's default 160x120.
    "small": Preset("small", city="small", seg={"epochs": 4, "image_size": (80, 60)}, shard_size=(80, 60),
                    recipes="tiny", folds=3,
                    # 24 steps a model: 9 Ray Train jobs (teacher, 3 fold teachers, 3 students, 2 trials) fit the
                    # 20 minutes with the data stages; the models learn a little (the full preset shows the method).
                    sweep_trials=2, train=["data.batches_per_epoch=8", "train.epochs=3", JOBS_AT_ONCE]),
    "full": Preset("full", city="small", seg={"epochs": 4}, shard_size=(80, 60), recipes="cpu", folds=3,
                   sweep_trials=12),
}


def preset_named(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]


def recipe(preset: Preset, kind: str) -> str:
    return str(CONFIGS / preset.recipes / f"{kind}.yaml")
