"""Sample weighting: ranks on hand-made galleries, groups, normalisation, the in-batch degenerate case, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from structvpr.platform.losses.weighting import (
    WeightingConfig,
    gallery_weights,
    rank_of_true_positive,
    sample_weights,
)


def _at_angles(degrees: list[float]) -> torch.Tensor:
    """Unit vectors in a plane: the similarity to e0 is cos(angle), so angles order the gallery."""
    rad = torch.tensor(degrees) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


# ---- ranks ------------------------------------------------------------------------------------

def test_rank_counts_negatives_above_the_best_positive():
    gallery = _at_angles([0, 10, 20, 30, 40])
    gallery_labels = torch.tensor([0, 1, 2, 0, 0])  # row 0 is the query itself
    query = _at_angles([0, 0])
    labels = torch.tensor([0, 9])  # place 9 has no image in the gallery
    ranks = rank_of_true_positive(query, labels, gallery, gallery_labels, exclude_self_ids=torch.tensor([0, -1]))
    assert ranks.tolist() == [3, 6]  # two negatives before the first positive; no positive: G + 1
    with_self = rank_of_true_positive(query[:1], labels[:1], gallery, gallery_labels)
    assert with_self.tolist() == [1]  # not excluding itself, a query finds itself first


def test_rank_is_the_same_in_chunks():
    g = torch.Generator().manual_seed(0)
    gallery = F.normalize(torch.randn(50, 8, generator=g), dim=1)
    gallery_labels = torch.randint(0, 10, (50,), generator=g)
    query, labels = gallery[:12], gallery_labels[:12]
    self_ids = torch.arange(12)
    whole = rank_of_true_positive(query, labels, gallery, gallery_labels, self_ids)
    chunked = rank_of_true_positive(query, labels, gallery, gallery_labels, self_ids, chunk_size=7)
    assert torch.equal(whole, chunked)


# ---- groups and weights -----------------------------------------------------------------------

CFG = WeightingConfig(good_rank=1, noisy_rank=5, w_high=3.0, w_mid=1.0, w_low=0.5)


def test_groups_weights_and_normalisation():
    teacher = torch.tensor([1, 1, 3, 9, 1])
    student = torch.tensor([4, 1, 2, 1, 2])
    weights, counts = sample_weights(teacher, student, CFG)
    assert counts == {"noisy": 1, "teacher_right_student_wrong": 2, "both_right": 1, "other": 1,
                      "no_positive": 0, "all_zero": 0}
    raw = torch.tensor([3.0, 0.5, 1.0, 0.0, 3.0])
    torch.testing.assert_close(weights, raw * 5 / raw.sum())
    assert weights.sum().item() == pytest.approx(5.0)
    assert weights[3] == 0  # noisy
    assert weights[0] == weights.max() and weights[4] == weights.max()  # teacher right, student wrong


def test_all_noisy_gives_zeros_and_says_so():
    weights, counts = sample_weights(torch.tensor([7, 8, 9]), torch.tensor([1, 1, 1]), CFG, gallery_size=8)
    assert weights.tolist() == [0.0, 0.0, 0.0]
    assert counts["noisy"] == 3 and counts["all_zero"] == 1
    assert counts["no_positive"] == 1  # rank 9 = G + 1


def _views(directions: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(directions + noise * torch.randn(directions.shape, generator=g), dim=1)


def test_in_batch_ranks_degenerate_but_a_harder_gallery_finds_noisy_samples():
    places, views, dim = 4, 2, 16
    labels = torch.arange(places).repeat_interleave(views)
    basis = torch.eye(dim)
    teacher = _views(basis[labels], 0.05, seed=0)  # a teacher that separates its batch's places well
    student = teacher.clone()
    student[4] = _views(basis[3:4], 0.05, seed=1)[0]  # place 2, view 0 looks like place 3 to the student
    # In-batch: the teacher ranks every positive first, so nothing is noisy.
    self_ids = torch.arange(places * views)
    _, counts = gallery_weights(teacher, student, labels, teacher, student, labels, CFG, self_ids)
    assert counts["noisy"] == 0
    # Gallery: the batch's images plus look-alikes of other places next to places 0 and 1.
    near = labels[:4].repeat_interleave(3)  # 3 distractors per view of places 0 and 1: 6 per place
    distractors = _views(basis[near], 0.01, seed=2)
    distractor_labels = 100 + torch.arange(len(near))
    t_gallery = torch.cat([teacher, distractors])
    s_gallery = torch.cat([student, distractors])
    g_labels = torch.cat([labels, distractor_labels])
    weights, counts = gallery_weights(teacher, student, labels, t_gallery, s_gallery, g_labels, CFG, self_ids)
    assert counts["noisy"] == 4 and counts["no_positive"] == 0
    assert weights[:4].eq(0).all()  # the teacher drowns the positives of places 0 and 1
    assert weights[4] == weights.max()  # teacher right, student wrong: the top weight
    assert counts["teacher_right_student_wrong"] + counts["both_right"] == 4
    assert weights.sum().item() == pytest.approx(places * views)


# ---- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"good_rank": 0}, "good_rank must be >= 1"),
    ({"good_rank": 1.5}, "whole number"),
    ({"good_rank": 5, "noisy_rank": 3}, "noisy_rank"),
    ({"w_low": -0.1}, "w_low"),
    ({"w_mid": float("nan")}, "w_mid"),
    ({"w_high": 0.0, "w_mid": 0.0, "w_low": 0.0}, "w_high must be positive"),
    ({"w_high": 1.0, "w_mid": 2.0}, "largest"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightingConfig(**kwargs)


def test_config_accepts_integral_floats_from_tune():
    cfg = WeightingConfig(good_rank=2.0, noisy_rank=20.0)
    assert cfg.good_rank == 2 and isinstance(cfg.noisy_rank, int)
    assert WeightingConfig(**cfg.to_dict()) == cfg
