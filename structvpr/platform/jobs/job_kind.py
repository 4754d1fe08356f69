"""What a job of each kind reads, builds and computes: the teacher, and the student by its KD mode.

The training loop asks its job's kind instead of testing `recipe.kind` and `kd.mode`
itself; a new kind of job (or KD mode) is one class (or one `KD_MODES` entry) here.
"""

from __future__ import annotations

import torch

from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.losses.kd import kd_kl_from_teacher_logits, kd_per_sample, logits_by_row_teacher
from structvpr.platform.losses.student_loss import KDMode, kd_mode, student_loss
from structvpr.platform.losses.weighting import GROUPS, counts_per_condition, rank_of_true_positive, sample_weights
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
            teacher_desc = None if job.fold_teachers else job.teacher.embed(seg)
        if job.fold_teachers:
            kd = kd_kl_from_teacher_logits(desc.float(), self.fold_teacher_logits(job, seg, labels), kd_cfg.tau)
        else:
            kd = kd_per_sample(kd_cfg.loss, desc.float(), teacher_desc.float(), tau=kd_cfg.tau)
        weights, counts = self.weights(job, batch, labels, desc, teacher_desc, gallery) if self.mode.weighted else (None, {})
        total, parts = student_loss(metric, kd, weights, kd_cfg.lam, self.mode.name)
        return total, {"loss": total.detach(), "metric_loss": parts["metric"], "kd": parts["kd_mean"]}, counts

    @staticmethod
    @torch.no_grad()
    def fold_teacher_logits(job, seg: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """kd.teacher_source=folds: sample i's similarity targets from the fold teacher that never saw its place,
        each fold teacher embedding the whole batch (its row must stay in its own descriptor space)."""
        folds = torch.tensor([job.fold_of_place[int(p)] for p in labels.tolist()], device=seg.device)
        present = sorted(set(folds.tolist()))
        descs = [job.fold_teachers[f].embed(seg).float() for f in present]
        index = torch.tensor([present.index(f) for f in folds.tolist()], device=seg.device)
        return logits_by_row_teacher(descs, index, job.recipe.kd.tau)

    def weights(self, job, batch: dict, labels, desc, teacher_desc, gallery):
        """StructVPR weights of the batch and the group counts, overall and per condition.

        r_S is ranked over the gallery; r_T too (kd.ranks=in_fold), or read from the ranks table of fold
        teachers that never saw the sample's place (kd.ranks=out_of_fold: job.teacher_ranks)."""
        cfg = job.recipe.kd.weighting
        rows = gallery.rows_of(batch["place"], batch["views"]).to(job.device)
        if job.teacher_ranks is not None:
            r_t = torch.tensor([job.teacher_ranks[(int(p), int(v))] for p, vs in zip(batch["place"], batch["views"])
                                for v in vs], device=job.device)
        else:
            r_t = rank_of_true_positive(teacher_desc.float(), labels, gallery.teacher, gallery.labels, rows)
        r_s = rank_of_true_positive(desc.detach().float(), labels, gallery.student, gallery.labels, rows)
        weights, counts = sample_weights(r_t, r_s, cfg, gallery_size=gallery.labels.shape[0])
        conditions = [gallery.conditions[i] for i in rows.tolist()]
        return weights, counts | counts_per_condition(r_t, r_s, cfg, conditions)


def job_kind(recipe: Recipe) -> TeacherKind | StudentKind:
    return TeacherKind() if recipe.kind == "teacher" else StudentKind(kd_mode(recipe.kd.mode))
