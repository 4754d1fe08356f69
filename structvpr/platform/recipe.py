"""Training recipes: the typed sections of a teacher or student YAML file, validated before any Ray work."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from structvpr.platform.losses.kd import KD_FUNCTIONS
from structvpr.platform.losses.student_loss import KD_MODES, kd_mode
from structvpr.platform.losses.weighting import WeightingConfig

RANK_SOURCES = ("in_fold", "out_of_fold")
TEACHER_SOURCES = ("full", "folds")
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


@dataclass
class DataSection:
    shards: str = ""
    """Folder of shards written by `structvpr data shards` (public key: data.shards)."""
    places_per_batch: int = 32
    """P: places per batch on each worker."""
    views_per_place: int = 4
    """K: views of each place in a batch."""
    batches_per_epoch: int = 20
    """Batches per worker per epoch (shards are resampled, so ranks stay in step)."""
    loader_workers: int = 0
    """DataLoader processes per training worker (0: decode in the training process)."""
    shuffle_buffer: int = 256
    """Samples held for shuffling."""

    def __post_init__(self):
        for name in ("places_per_batch", "views_per_place", "batches_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be at least 1, got {getattr(self, name)}")
        if self.views_per_place < 2:
            raise ValueError("data.views_per_place must be at least 2: a metric loss needs positives")


@dataclass
class ModelSection:
    backbone: str = "resnet18"
    """timm model name (trained from scratch unless pretrained is true)."""
    aggregator: str = "gem"
    """gem | netvlad | mixvpr."""
    dim: int = 256
    """Descriptor size."""
    pretrained: bool = False
    """timm weights (needs internet)."""
    drop_void: bool = False
    """Teacher: read 7 one-hot channels instead of 8 (void pixels all zero)."""


@dataclass
class TrainSection:
    epochs: int = 4
    """Epochs (public key: train.epochs)."""
    seed: int = 0
    """Seed of model init, data order and augmentation (public key: train.seed)."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    colour_jitter: float = 0.4
    """Strength of RGB colour jitter (0: none)."""
    amp: bool = True
    """Mixed precision on CUDA (ignored on the CPU)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on the CPU)."""

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")


@dataclass
class ScalingSection:
    num_workers: int = 1
    """Ray Train workers (public key: scaling.num_workers)."""
    use_gpu: bool = False
    """One GPU per worker (public key: scaling.use_gpu)."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker; fractions work (asking for more than the cluster has hangs)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    """STRICT_SPREAD puts each worker on a different node."""
    memory_per_worker_gb: float = 0.0
    """Memory Ray reserves per worker (0: none reserved)."""
    wait_for_resources_s: float = 0.0
    """Autoscaling clusters: how long to wait for nodes before refusing a job the cluster cannot hold yet."""

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError(f"scaling.num_workers must be at least 1, got {self.num_workers}")
        for name in ("cpus_per_worker", "memory_per_worker_gb", "wait_for_resources_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"scaling.{name} must be a finite number >= 0, got {value}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"scaling.cpus_per_worker must be positive (fractions work), got {self.cpus_per_worker}")


@dataclass
class RunSection:
    name: str = ""
    """Stable run name: a job restarted with the same name resumes (default: derived from the recipe)."""
    storage_path: str = "structvpr-runs"
    """Where Ray Train keeps checkpoints (shared storage on a cluster)."""
    max_failures: int = 3
    """Worker-group restarts before the job fails."""
    keep_checkpoints: int = 2
    """Checkpoints kept, best by val recall@1."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    """Ray Train's own console messages (INFO: worker-group start, every report); its log files keep all."""

    def __post_init__(self):
        # The name becomes a folder under storage_path: it must stay inside it.
        if self.name and not SAFE_NAME.fullmatch(self.name):
            raise ValueError(f"run.name {self.name!r} must be one folder name: letters, digits, '.', '_' and '-', "
                             "not starting with '.' (it becomes a folder under run.storage_path)")
        if self.max_failures < 0 or self.keep_checkpoints < 1:
            raise ValueError(f"run.max_failures must be >= 0 and run.keep_checkpoints >= 1, got "
                             f"{self.max_failures} and {self.keep_checkpoints}")


@dataclass
class KDSection:
    mode: str = "weighted"
    """none: RGB only; plain: unweighted KD; weighted: StructVPR weighting (public key: kd.mode; losses/student_loss.py)."""
    loss: str = "kl"
    """kl: similarity-distribution KL; mse: descriptor MSE (losses/kd.py)."""
    lam: float = 1.0
    """Lambda: weight of the KD term."""
    tau: float = 0.1
    """Temperature of the similarity distributions."""
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    ranks: str = "in_fold"
    """Where weighted KD takes r_T: in_fold (the teacher ranks a gallery of images it trained on) or
    out_of_fold (the ranks table of fold teachers that never saw the place; docs/METHOD.md)."""
    teacher_ranks: str = ""
    """kd.ranks=out_of_fold: the teacher whose ranks table to read (default: `teacher`), or a ranks.csv file."""
    teacher_source: str = "full"
    """Which teacher gives the KD targets: full (trained on all places) or folds (for each sample, the fold
    teacher that never saw its place; needs a teacher trained with folds=K)."""

    def __post_init__(self):
        kd_mode(self.mode)
        if self.ranks not in RANK_SOURCES:
            raise ValueError(f"kd.ranks must be one of {', '.join(RANK_SOURCES)}, got {self.ranks!r}")
        if self.teacher_source not in TEACHER_SOURCES:
            raise ValueError(f"kd.teacher_source must be one of {', '.join(TEACHER_SOURCES)}, got {self.teacher_source!r}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"kd.lam must be a finite number >= 0, got {self.lam}")
        if not math.isfinite(self.tau) or self.tau <= 0:
            raise ValueError(f"kd.tau must be positive, got {self.tau}")
        if self.loss not in KD_FUNCTIONS:
            raise ValueError(f"kd.loss must be one of {', '.join(KD_FUNCTIONS)}, got {self.loss!r}")


@dataclass
class TrackingSection:
    experiment: str = "structvpr"
    """MLflow experiment (public key: tracking.experiment)."""
    uri: str = ""
    """MLflow tracking URI; empty: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working folder."""
    register: bool = True
    """Register the final model as a new version of structvpr-teacher / structvpr-student."""


@dataclass
class EvalSection:
    radius_m: float = 25.0
    n_values: tuple[int, ...] = (1, 5, 10, 20)
    split: str = "val"
    """Split evaluated each epoch (val); `structvpr eval` takes any."""
    shards: str = ""
    """Shard folder evaluated each epoch and after training (empty: data.shards). For training sets without a
    val split (GSV-Cities): e.g. Pitts30k shards built at the same size (public key: eval.shards)."""

    def __post_init__(self):
        if not math.isfinite(self.radius_m) or self.radius_m <= 0:
            raise ValueError(f"eval.radius_m must be a positive number of metres, got {self.radius_m}")
        if not self.n_values or min(self.n_values) < 1:
            raise ValueError(f"eval.n_values must be positive ranks, got {list(self.n_values)}")


@dataclass
class Recipe:
    kind: Literal["teacher", "student"] = "teacher"
    teacher: str = ""
    """Student recipes: checkpoint path, runs:/<id>/model or models:/name@alias (public key: teacher)."""
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=RunSection)
    kd: KDSection = field(default_factory=KDSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    folds: int = 0
    """Teacher: also train this many fold teachers and write the out-of-fold ranks table (0: none; public key: folds)."""
    fold_block_m: float = 100.0
    """Side of the square blocks of places dealt to folds, in metres (neighbouring places share a fold)."""
    fold: int = -1
    """Set by `folds`: the fold this teacher holds out (-1: the full teacher, trained on every place)."""

    @property
    def eval_shards(self) -> str:
        """The shard folder every evaluation of training reads: eval.shards, else data.shards."""
        return self.eval.shards or self.data.shards

    def __post_init__(self):
        if not self.data.shards:
            raise ValueError("data.shards is required: the folder written by `structvpr data shards`")
        self._check_folds()
        if self.kind == "student" and KD_MODES[self.kd.mode].uses_teacher and not self.teacher:
            raise ValueError(f"a student with kd.mode={self.kd.mode} needs `teacher` (checkpoint, runs:/ or models:/)")
        if self.kd.teacher_source == "folds":
            self._check_fold_targets()

    def _check_fold_targets(self) -> None:
        """kd.teacher_source=folds: each fold teacher has its own descriptor space, so only what stays inside one
        space works: similarity distributions (kl), with r_T from the table rather than a full-teacher gallery."""
        if not (self.kind == "student" and KD_MODES[self.kd.mode].uses_teacher):
            raise ValueError("kd.teacher_source=folds gives KD targets: it needs a student with kd.mode plain or weighted")
        if self.kd.loss != "kl":
            raise ValueError(f"kd.teacher_source=folds needs kd.loss=kl, got {self.kd.loss!r}: the fold teachers' "
                             "descriptors live in different spaces, and only similarity distributions compare")
        if KD_MODES[self.kd.mode].weighted and self.kd.ranks != "out_of_fold":
            raise ValueError("kd.teacher_source=folds with kd.mode=weighted needs kd.ranks=out_of_fold "
                             "(in-fold ranks come from the full teacher's gallery)")

    def _check_folds(self) -> None:
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"folds must be 0 (no fold teachers) or at least 2, got {self.folds}")
        if self.folds and self.kind != "teacher":
            raise ValueError("folds is a teacher key: `structvpr train teacher ... folds=K` writes the ranks table "
                             "that a student reads with kd.ranks=out_of_fold")
        if not math.isfinite(self.fold_block_m) or self.fold_block_m <= 0:
            raise ValueError(f"fold_block_m must be a positive number of metres, got {self.fold_block_m}")
        if self.fold != -1 and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must be -1 (the full teacher) or in 0..folds-1, got {self.fold} with folds={self.folds}")


def name_settings(recipe: Recipe) -> dict:
    """The recipe as hashed into stable run and sweep names, less the keys added after names were given.

    An empty eval.shards is left out, so every run named before the key existed keeps its name (and resumes);
    a set one is hashed, so validating on other shards starts a new run."""
    settings = asdict(recipe)
    if not recipe.eval.shards:
        settings["eval"].pop("shards")
    return settings
