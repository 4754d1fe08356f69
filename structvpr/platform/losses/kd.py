"""Knowledge distillation terms, one value per sample so that sample weights can multiply them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _off_diagonal_logits(desc: torch.Tensor, tau: float) -> torch.Tensor:
    """Cosine similarities / tau, [B, B] with the diagonal removed -> [B, B - 1]."""
    # float: under AMP, half precision loses the softmax tails; normalising fixes what tau means.
    desc = F.normalize(desc.float(), dim=-1)
    sim = desc @ desc.T / tau
    b = sim.shape[0]
    keep = ~torch.eye(b, dtype=torch.bool, device=sim.device)
    return sim[keep].view(b, b - 1)


def kd_similarity_kl(student_desc: torch.Tensor, teacher_desc: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Per-sample KL(p_T || p_S) [B], p = softmax over sample i's similarities to the other batch samples / tau.

    Self-similarity is left out: it is 1 for both models and would only dilute the
    distributions. The teacher is detached (it is frozen; this also keeps a mistake from
    training it). Descriptor sizes of teacher and student may differ.
    """
    if student_desc.shape[0] != teacher_desc.shape[0]:
        raise ValueError(f"student has {student_desc.shape[0]} samples, teacher {teacher_desc.shape[0]}")
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if student_desc.shape[0] < 2:
        return student_desc.new_zeros(student_desc.shape[0])  # no other sample to compare with
    return kd_kl_from_teacher_logits(student_desc, _off_diagonal_logits(teacher_desc.detach(), tau), tau)


def kd_kl_from_teacher_logits(student_desc: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-sample KL(p_T || p_S) [B] from the teacher's off-diagonal similarity logits [B, B - 1]."""
    log_p_s = F.log_softmax(_off_diagonal_logits(student_desc, tau), dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach(), dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


def logits_by_row_teacher(teacher_descs: list[torch.Tensor], row_teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Teacher logits [B, B - 1] where row i comes from teacher row_teacher[i]'s descriptors of the whole batch.

    Each row stays within one teacher's descriptor space, which is what lets teachers with different
    spaces (the fold teachers) each give the targets of their own samples."""
    logits = torch.stack([_off_diagonal_logits(d, tau) for d in teacher_descs])  # [T, B, B - 1]
    return logits[row_teacher, torch.arange(row_teacher.shape[0], device=row_teacher.device)]


def kd_mse(student_desc: torch.Tensor, teacher_desc: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """Per-sample mean squared error [B] between L2-normalised descriptors (sizes must match); teacher detached.

    `tau` is taken and ignored so that every KD function has one signature (MSE has no temperature).
    """
    if student_desc.shape != teacher_desc.shape:
        raise ValueError(f"descriptor MSE needs equal shapes, got {tuple(student_desc.shape)} "
                         f"and {tuple(teacher_desc.shape)}")
    diff = F.normalize(student_desc, dim=-1) - F.normalize(teacher_desc.detach(), dim=-1)
    return diff.pow(2).mean(dim=-1)


# The one list of KD losses (`kd.loss`): name -> f(student_desc, teacher_desc, tau) -> [B].
KD_FUNCTIONS = {"kl": kd_similarity_kl, "mse": kd_mse}


def kd_per_sample(kind: str, student_desc: torch.Tensor, teacher_desc: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """The KD term per sample of the loss named `kind` ('kl', the default, or 'mse')."""
    if kind not in KD_FUNCTIONS:
        raise ValueError(f"kd.loss must be one of {', '.join(KD_FUNCTIONS)}, got {kind!r}")
    return KD_FUNCTIONS[kind](student_desc, teacher_desc, tau)
