"""What a job of each kind reads, builds and computes: the teacher, and the student by its KD mode.

The training loop asks its job's kind instead of testing `recipe.kind` and `kd.mode`
itself; a new kind of job (or KD mode) is one class (or one `KD_MODES` entry) here.
"""

from __future__ import annotations

import torch

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.losses.kd import kd_per_sample
from structvpr.platform.losses.student_loss import KDMode, kd_mode, student_loss
from structvpr.platform.losses.weighting import GROUPS, gallery_weights
from structvpr.platform.models.inputs import ColorJitter, flatten_views
from structvpr.platform.recipe import Recipe


class TeacherKind:
    """The segmentation branch: reads one-hot category maps, trained by the metric loss alone."""

    name = "teacher"
    input_member = "seg"
    uses_teacher = False
    uses_gallery = False
    weighting_groups: tuple[str, ...] = ()

    def members_read(self) -> tuple[str, ...]:
        return ("seg",)

    def in_chans(self, recipe: Recipe, manifest: Manifest) -> int:
        return manifest.num_categories - int(recipe.model.drop_void)

    def jitter(self, recipe: Recipe) -> ColorJitter | None:
        return None  # segmentation is the condition-invariant input: nothing to jitter

    def objective(self, job, batch: dict, labels, desc, metric, gallery):
        """(loss, detached parts for logging, weighting group counts)."""
        return metric, {"metric_loss": metric.detach()}, {}


class StudentKind:
    """The RGB branch, distilled from a frozen teacher as its KD mode says."""

    name = "student"
    input_member = "rgb"

    def __init__(self, mode: KDMode):
        self.mode = mode
        self.uses_teacher = mode.uses_teacher
        self.uses_gallery = mode.weighted  # ranks for the weights are taken over a gallery cache
        self.weighting_groups = GROUPS if mode.weighted else ()

    def members_read(self) -> tuple[str, ...]:
        # Segmentation is read only for the teacher that KD runs.
        return ("rgb", "seg") if self.uses_teacher else ("rgb",)

    def in_chans(self, recipe: Recipe, manifest: Manifest) -> int:
        return 3

    def jitter(self, recipe: Recipe) -> ColorJitter | None:
        strength = recipe.train.colour_jitter
        return ColorJitter(strength, strength, strength) if strength else None

    def objective(self, job, batch: dict, labels, desc, metric, gallery):
        if not self.uses_teacher:
            return metric, {"metric_loss": metric.detach()}, {}
        kd_cfg = job.recipe.kd
        with torch.no_grad():
            seg, _ = flatten_views(batch["seg"].to(job.device), batch["place"])
            teacher_desc = job.teacher.embed(seg)
        kd = kd_per_sample(kd_cfg.loss, desc.float(), teacher_desc.float(), tau=kd_cfg.tau)
        weights, counts = None, {}
        if self.mode.weighted:
            rows = gallery.rows_of(batch["place"], batch["views"]).to(job.device)
            weights, counts = gallery_weights(teacher_desc.float(), desc.detach().float(), labels, gallery.teacher,
                                              gallery.student, gallery.labels, kd_cfg.weighting, exclude_self_ids=rows)
        total, parts = student_loss(metric, kd, weights, kd_cfg.lam, self.mode.name)
        return total, {"loss": total.detach(), "metric_loss": parts["metric"], "kd": parts["kd_mean"]}, counts


def job_kind(recipe: Recipe) -> TeacherKind | StudentKind:
    return TeacherKind() if recipe.kind == "teacher" else StudentKind(kd_mode(recipe.kd.mode))
