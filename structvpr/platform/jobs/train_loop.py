"""The per-worker training function that Ray Train runs: one loop for the teacher and the student.

Each epoch: (student, weighted) refresh the gallery, train on P x K batches,
evaluate on val (rank 0, shared with all ranks), report metrics and a
checkpoint. A restarted worker group resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import ray.train
import ray.train.torch
import torch
from torch import nn

from structvpr.config import from_dict
from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.evaluation.evaluate import evaluate_branch
from structvpr.platform.jobs.data import training_loader
from structvpr.platform.jobs.gallery import Gallery, build_gallery
from structvpr.platform.jobs.job_kind import StudentKind, TeacherKind, job_kind
from structvpr.platform.jobs.progress import StepPoster
from structvpr.platform.losses.metric import MetricLoss
from structvpr.platform.models import create_branch
from structvpr.platform.models.inputs import flatten_views
from structvpr.platform.recipe import Recipe
from structvpr.platform.store.checkpoint import load_state, save_state, set_rng_state, unwrap
from structvpr.platform.store.references import load_branch

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise in job logs


@dataclass
class Job:
    recipe: Recipe
    kind: TeacherKind | StudentKind
    rank: int
    world_size: int
    device: torch.device
    manifest: Manifest
    run_id: str
    tracking_uri: str
    teacher: nn.Module | None = None
    teacher_gallery: torch.Tensor | None = None
    best: float = -1.0
    history: list = field(default_factory=list)
    resumed_from: list = field(default_factory=list)  # finished epochs at each automatic restart
    poster: StepPoster | None = None  # rank 0 feeds the driver's progress bar
    exclude_places: frozenset[int] = frozenset()  # a fold teacher does not train on its fold (and buffer)
    teacher_ranks: dict[tuple[int, int], int] | None = None  # (place, view) -> out-of-fold r_T (kd.ranks=out_of_fold)
    fold_teachers: list = field(default_factory=list)  # kd.teacher_source=folds: fold i's teacher at index i
    fold_of_place: dict[int, int] = field(default_factory=dict)

    @property
    def amp(self) -> bool:
        return self.recipe.train.amp and self.device.type == "cuda"


def train_loop_per_worker(config: dict) -> None:
    job = make_job(config)
    apply_log_level(job.recipe.run.log_level)
    record_worker_nodes(job)
    model, optimizer, scheduler = build_model(job)
    start_epoch = restore(job, model, optimizer, scheduler)
    metric_loss = MetricLoss(distributed=job.world_size > 1)
    loader = training_loader(job.recipe, job.rank, job.world_size, start_epoch, job.exclude_places)
    for epoch in range(start_epoch, job.recipe.train.epochs):
        torch.manual_seed(job.recipe.train.seed * 7919 + epoch * 101 + job.rank)
        gallery = refresh_gallery(job, model) if job.kind.uses_gallery else None
        started = time.perf_counter()
        train_stats = train_epoch(job, model, optimizer, scheduler, metric_loss, gallery, loader, epoch)
        train_stats["epoch_seconds"] = time.perf_counter() - started
        val = validate(job, model)
        report(job, model, optimizer, scheduler, epoch, train_stats | val)


def make_job(config: dict) -> Job:
    """The job of this Ray Train worker: rank, world size and device from Ray Train's context."""
    ctx = ray.train.get_context()
    return build_job(from_dict(Recipe, config["recipe"]), ctx.get_world_rank(), ctx.get_world_size(),
                     ray.train.torch.get_device(), config["run_id"], config["tracking_uri"],
                     teacher_ref=config.get("teacher_ref", ""), progress_file=config.get("progress_file"),
                     inputs=config.get("inputs"))


def build_job(recipe: Recipe, rank: int, world_size: int, device: torch.device, run_id: str = "",
              tracking_uri: str = "", teacher_ref: str = "", progress_file: str | None = None,
              inputs: dict | None = None) -> Job:
    """A job from explicit arguments (benchmarks build one outside Ray Train this way).

    `inputs` is what the driver computed for it: `exclude_places` (a fold teacher's held-out places),
    `teacher_ranks` ([place, view, r_T] rows of the ranks table), `fold_teachers` (references) and
    `fold_of_place` ([place, fold] pairs)."""
    inputs = inputs or {}
    job = Job(recipe, job_kind(recipe), rank, world_size, device, Manifest.load(recipe.data.shards), run_id, tracking_uri,
              exclude_places=frozenset(inputs.get("exclude_places", ())))
    if "teacher_ranks" in inputs:
        job.teacher_ranks = {(int(p), int(v)): int(r) for p, v, r in inputs["teacher_ranks"]}
    if rank == 0 and progress_file:
        job.poster = StepPoster(progress_file, recipe.data.batches_per_epoch)
    if job.kind.uses_teacher:
        job.teacher, _ = load_branch(teacher_ref or recipe.teacher, device)
        job.teacher.requires_grad_(False)
    job.fold_teachers = [load_branch(ref, device)[0].requires_grad_(False) for ref in inputs.get("fold_teachers", ())]
    job.fold_of_place = {int(p): int(f) for p, f in inputs.get("fold_of_place", ())}
    return job


def apply_log_level(level: str) -> None:
    """run.log_level for the one Ray Train logger that escapes it.

    Ray 2.60 logs every report ("Reporting training result N: TrainingReport(...)") at INFO through a
    logger named by its file path (`logging.getLogger(__file__)` in ray/train/v2/_internal/execution/
    context.py). RunConfig's LoggingConfig filters only loggers named `ray.train.*`, so that line goes
    to the worker's root console handler whatever the level. Naming the logger by its file reaches it.
    """
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to fix
        return
    logging.getLogger(context.__file__).setLevel(level)


def record_worker_nodes(job: Job) -> None:
    """Tag the MLflow run with the Ray nodes the workers run on (how users see that a job spread)."""
    import ray

    nodes = [ray.get_runtime_context().get_node_id()]
    if job.world_size > 1:
        nodes = [None] * job.world_size
        torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    if job.rank == 0:
        from structvpr.platform.store.tracking import client

        client(job.tracking_uri).set_tag(job.run_id, "structvpr.worker_nodes", ",".join(sorted(set(nodes))))


def build_model(job: Job, prepare=None):
    """Model, AdamW and LR schedule for the job; `prepare` wraps the model (default: Ray Train's prepare_model,
    DDP and device placement inside a Ray Train session; benchmarks outside one pass a plain move to the device)."""
    r = job.recipe
    width, height = job.manifest.image_size
    # train.seed fixes the initial weights too, not only the batches: two runs of a recipe, or two sweep trials
    # of one config, then train the same model (unseeded, the same trial gave val R@1 35.4 and 22.9).
    torch.manual_seed(r.train.seed)
    model = create_branch(r.model.backbone, job.kind.in_chans(r, job.manifest), r.model.aggregator, r.model.dim,
                          image_hw=(height, width), pretrained=r.model.pretrained, num_classes=job.manifest.num_categories)
    if job.device.type == "cuda" and r.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = (prepare or ray.train.torch.prepare_model)(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.train.lr, weight_decay=r.train.weight_decay)
    total = r.train.epochs * r.data.batches_per_epoch
    warmup = r.train.warmup_epochs * r.data.batches_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total))
    return model, optimizer, scheduler


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def restore(job: Job, model, optimizer, scheduler) -> int:
    """Resume from the checkpoint Ray Train hands back after a restart; the number of finished epochs."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = load_state(folder)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    job.best, job.history = state.get("best", -1.0), state.get("history", [])
    job.resumed_from = state.get("resumed_from", []) + [state["epoch"]]
    print(f"[rank {job.rank}] resumed after epoch {state['epoch']} from {checkpoint.path}", flush=True)
    return state["epoch"]


def refresh_gallery(job: Job, model) -> Gallery:
    # With out-of-fold ranks from a table, the teacher's gallery is never needed: only r_S is ranked.
    teacher = job.teacher if job.teacher_ranks is None else None
    gallery, job.teacher_gallery = build_gallery(unwrap(model), job.teacher_gallery, teacher,
                                                 job.recipe.data.shards, job.device, job.rank, job.world_size)
    return gallery


def train_epoch(job: Job, model, optimizer, scheduler, metric_loss, gallery, loader, epoch: int = 0) -> dict:
    model.train()
    jitter = job.kind.jitter(job.recipe)
    sums, groups, steps = {}, Counter(), 0
    for batch in loader:
        with torch.autocast(job.device.type, dtype=torch.bfloat16, enabled=job.amp):
            loss, parts, counts = batch_loss(job, model, metric_loss, batch, gallery, jitter)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        for k, v in parts.items():  # kept on the device: a float() each step would sync it every step
            sums[k] = sums[k] + v.detach() if k in sums else v.detach()
        groups.update(counts)
        steps += 1
        if job.poster is not None:
            job.poster.step(epoch, steps, parts.get("loss", parts["metric_loss"]))
    stats = {f"train_{k}": float(v) / max(1, steps) for k, v in sums.items()}
    stats.update({f"group_{g}": float(groups.get(g, 0)) for g in group_names(job, gallery)})
    stats["lr"] = scheduler.get_last_lr()[0]
    return _all_reduce_mean(stats, job) if job.world_size > 1 else stats


def group_names(job: Job, gallery: Gallery | None) -> list[str]:
    """Every weighting group, and every group per condition: the same keys on every rank (all_reduce needs them)."""
    groups = list(job.kind.weighting_groups)
    conditions = gallery.condition_names if gallery is not None and groups else []
    return groups + [f"{g}.{c}" for g in groups for c in conditions]


def batch_loss(job: Job, model, metric_loss, batch: dict, gallery: Gallery | None, jitter):
    """(loss, detached parts, weighting group counts) of one P x K batch; the job's kind adds what it adds."""
    raw, labels = flatten_views(batch[job.kind.input_member].to(job.device), batch["place"].to(job.device))
    x = unwrap(model).preprocess(raw, jitter=jitter)
    if job.device.type == "cuda" and job.recipe.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    desc = model(x)
    metric = metric_loss(desc, labels) / metric_loss.world_size()  # pml sums over ranks; DDP averages back
    return job.kind.objective(job, batch, labels, desc, metric, gallery)


def _all_reduce_mean(stats: dict, job: Job) -> dict:
    keys = sorted(stats)
    values = torch.tensor([stats[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    out = dict(zip(keys, (values / job.world_size).tolist()))
    # Group counts are totals over ranks, not means.
    return {k: (v * job.world_size if k.startswith("group_") else v) for k, v in out.items()}


def validate(job: Job, model) -> dict:
    """Recall on the eval split of the eval shards (eval.shards, else data.shards), computed on rank 0 and shared
    so that every rank reports the same numbers."""
    metrics = [None]
    if job.rank == 0:
        report, _, _ = evaluate_branch(unwrap(model), job.recipe.eval_shards, job.recipe.eval.split, job.device,
                                       job.recipe.eval.n_values, job.recipe.eval.radius_m)
        metrics[0] = {f"val_{k}": v for k, v in report.to_metrics().items()}
    if job.world_size > 1:
        torch.distributed.broadcast_object_list(metrics, src=0)
    return metrics[0]


def report(job: Job, model, optimizer, scheduler, epoch: int, metrics: dict) -> None:
    metrics = {"epoch": epoch + 1, **metrics}
    score = metrics.get("val_recall_at_1", float("nan"))
    job.best = max(job.best, score) if not math.isnan(score) else job.best
    job.history.append(metrics)
    if job.rank == 0:
        log_epoch_to_mlflow(job, metrics)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if job.rank == 0:
            extra = {"best": job.best, "history": job.history, "recipe": asdict(job.recipe), "resumed_from": job.resumed_from,
                     "trained_on": {"image_size": list(job.manifest.image_size), "shards": job.recipe.data.shards,
                                    "kind": job.recipe.kind}, "mlflow_run_id": job.run_id}
            save_state(folder, model, optimizer, scheduler, epoch + 1, extra)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def log_epoch_to_mlflow(job: Job, metrics: dict) -> None:
    from structvpr.platform.store.tracking import log_metrics

    log_metrics(job.tracking_uri, job.run_id, metrics, step=metrics["epoch"])
