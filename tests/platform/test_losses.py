"""Metric loss (single process and across two gloo ranks), KD terms and the student objective."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from structvpr.platform.losses import MetricLoss, kd_mse, kd_per_sample, kd_similarity_kl
from structvpr.platform.losses.student_loss import student_loss


def _toy_batch(places: int = 8, views: int = 4, dim: int = 16, noise: float = 1.0, seed: int = 0):
    """Separable toy data: one random centre per place, noisy views around it (hard enough for the miner)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(places, dim, generator=g)
    x = centres.repeat_interleave(views, dim=0) + noise * torch.randn(places * views, dim, generator=g)
    return x, torch.arange(places).repeat_interleave(views)


# ---- KD terms ----------------------------------------------------------------------------------

def test_kd_kl_zero_when_student_equals_teacher():
    desc = F.normalize(torch.randn(6, 8), dim=1)
    kl = kd_similarity_kl(desc, desc.clone(), tau=0.1)
    assert kl.shape == (6,)
    torch.testing.assert_close(kl, torch.zeros(6), atol=1e-6, rtol=0)


def test_kd_kl_positive_per_sample_and_reaches_only_the_student():
    student = F.normalize(torch.randn(6, 8), dim=1).requires_grad_()
    teacher = F.normalize(torch.randn(6, 12), dim=1).requires_grad_()  # sizes may differ
    kl = kd_similarity_kl(student, teacher, tau=0.1)
    assert kl.shape == (6,) and (kl > 0).all()
    kl.sum().backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_kd_kl_ignores_self_similarity():
    # Scaling a descriptor does not change cosine similarities; only off-diagonal entries matter.
    desc = F.normalize(torch.randn(5, 8), dim=1)
    torch.testing.assert_close(kd_similarity_kl(desc * 3.0, desc), torch.zeros(5), atol=1e-6, rtol=0)
    assert kd_similarity_kl(desc[:1], desc[:1]).shape == (1,)  # a lone sample has nothing to compare


def test_kd_mse_per_sample():
    a = F.normalize(torch.randn(4, 8), dim=1)
    assert kd_mse(a, a).abs().max() < 1e-7
    b = F.normalize(torch.randn(4, 8), dim=1)
    torch.testing.assert_close(kd_mse(a, b), ((a - b) ** 2).mean(dim=1))
    with pytest.raises(ValueError):
        kd_mse(a, torch.randn(4, 9))
    with pytest.raises(ValueError):
        kd_per_sample("cosine", a, b)


# ---- metric loss ------------------------------------------------------------------------------

def test_metric_loss_decreases_on_separable_toy_embeddings():
    torch.manual_seed(0)
    x, labels = _toy_batch()
    head = torch.nn.Linear(x.shape[1], 8)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    loss_fn = MetricLoss()
    values = []
    for _ in range(15):
        loss = loss_fn(F.normalize(head(x), dim=1), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[0] > 0 and loss_fn.last_num_pairs is not None
    assert values[-1] < 0.5 * values[0]


def test_metric_loss_names_and_no_miner():
    x, labels = _toy_batch()
    loss_fn = MetricLoss(loss="ContrastiveLoss", miner="none")
    assert loss_fn(F.normalize(x, dim=1), labels).item() > 0 and loss_fn.last_num_pairs is None
    with pytest.raises(ValueError, match="no losses named"):
        MetricLoss(loss="NoSuchLoss")


def test_distributed_metric_loss_without_process_group_is_the_plain_loss():
    x, labels = _toy_batch()
    emb = F.normalize(x, dim=1)
    torch.testing.assert_close(MetricLoss(distributed=True)(emb, labels), MetricLoss()(emb, labels))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, results):
    """One rank: half the batch in, loss, mined pairs and the gradient of its own half out."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, labels = _toy_batch()
        half = x.shape[0] // world
        mine = slice(rank * half, (rank + 1) * half)
        emb = F.normalize(x[mine], dim=1).detach().requires_grad_()
        loss_fn = MetricLoss(distributed=True)
        loss = loss_fn(emb, labels[mine])
        loss.backward()
        results[rank] = (loss.item(), loss_fn.world_size(), loss_fn.last_num_pairs, emb.grad.clone())
    finally:
        dist.destroy_process_group()


def test_ddp_metric_loss_sees_every_ranks_embeddings():
    world = 2
    # Spawn, not fork: this pytest process may hold a Ray driver, and a forked copy of its threads
    # and sockets has crashed Ray's pubsub in the driver (docs/TESTING.md).
    with mp.get_context("spawn").Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_rank, args=(world, _free_port(), results), nprocs=world, join=True)
        results = dict(results)
    x, labels = _toy_batch()
    full = F.normalize(x, dim=1).detach().requires_grad_()
    single = MetricLoss()
    full_loss = single(full, labels)
    full_loss.backward()
    half = x.shape[0] // world
    for rank, (loss, factor, pairs, grad) in results.items():
        assert factor == world
        # pml scales by the world size so that DDP's averaging of gradients gives the full-batch gradient.
        assert loss / world == pytest.approx(full_loss.item(), rel=1e-5)
        assert pairs == single.last_num_pairs  # the miner saw all 2 x half embeddings
        torch.testing.assert_close(grad / world, full.grad[rank * half:(rank + 1) * half], atol=1e-6, rtol=1e-4)


# ---- student objective ------------------------------------------------------------------------

def test_student_loss_modes():
    metric = torch.tensor(2.0)
    kd = torch.tensor([1.0, 2.0, 3.0, 6.0])
    total, parts = student_loss(metric, kd, None, lam=0.5, mode="none")
    assert total.item() == 2.0 and parts["kd_mean"].item() == 3.0
    total, parts = student_loss(metric, kd, None, lam=0.5, mode="plain")
    assert total.item() == pytest.approx(2.0 + 0.5 * 3.0) and parts["kd_term"].item() == pytest.approx(1.5)
    uniform, _ = student_loss(metric, kd, torch.ones(4), lam=0.5, mode="weighted")
    assert uniform.item() == pytest.approx(total.item())  # weights averaging 1 keep lambda's scale
    weights = torch.tensor([0.0, 0.0, 0.0, 4.0])
    total, _ = student_loss(metric, kd, weights, lam=0.5, mode="weighted")
    assert total.item() == pytest.approx(2.0 + 0.5 * 4.0 * 6.0 / 4)


def test_student_loss_refuses_bad_arguments():
    kd = torch.ones(3)
    with pytest.raises(ValueError, match="mode"):
        student_loss(torch.tensor(1.0), kd, None, 1.0, "sometimes")
    with pytest.raises(ValueError, match="weights"):
        student_loss(torch.tensor(1.0), kd, torch.ones(2), 1.0, "weighted")
    with pytest.raises(ValueError, match="per-sample"):
        student_loss(torch.tensor(1.0), None, None, 1.0, "plain")
