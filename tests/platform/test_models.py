"""Branches over the aggregator registry, and the input conversions the branches rely on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from structvpr.platform.models import (
    ColorJitter,
    create_branch,
    flatten_views,
    list_aggregators,
    register_aggregator,
    rgb_to_tensor,
    seg_to_onehot,
)

BACKBONE = "test_resnet"  # timm's tiny ResNet: the same code path as resnet18, a tenth of the cost
HW = (48, 64)
DIM = 32


def _raw_input(in_chans: int, batch: int = 4, hw=HW, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if in_chans == 3:
        return torch.randint(0, 256, (batch, 3, *hw), generator=g, dtype=torch.uint8)
    return torch.randint(0, 8, (batch, *hw), generator=g, dtype=torch.uint8)


def test_builtin_aggregators_registered():
    assert {"gem", "netvlad", "mixvpr"} <= set(list_aggregators())


@pytest.mark.parametrize("in_chans", [3, 8])
@pytest.mark.parametrize("aggregator", list_aggregators())
def test_branch_shape_norm_and_gradients(aggregator, in_chans):
    torch.manual_seed(0)
    branch = create_branch(BACKBONE, in_chans, aggregator, DIM, image_hw=HW)
    x = branch.preprocess(_raw_input(in_chans))
    assert x.shape == (4, in_chans, *HW) and x.dtype == torch.float32
    out = branch(x)
    assert out.shape == (4, DIM)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    (out @ torch.randn(DIM)).sum().backward()
    first_conv = next(p for p in branch.backbone.parameters() if p.dim() == 4)
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(p.grad is not None for p in branch.aggregator.parameters())


def test_seg_branch_without_void_reads_seven_channels():
    branch = create_branch(BACKBONE, 7, "gem", DIM)
    assert branch.input_kind == "seg" and branch.drop_void
    assert branch.embed(_raw_input(8)).shape == (4, DIM)


def test_bad_channel_counts_are_refused():
    with pytest.raises(ValueError, match="segmentation branch"):
        create_branch(BACKBONE, 5, "gem", DIM)
    with pytest.raises(ValueError, match="RGB branch"):
        create_branch(BACKBONE, 8, "gem", DIM, input_kind="rgb")
    with pytest.raises(KeyError, match="unknown aggregator"):
        create_branch(BACKBONE, 3, "nope", DIM)


def test_mixvpr_needs_image_size_and_pools_other_sizes():
    with pytest.raises(ValueError, match="image_hw"):
        create_branch(BACKBONE, 3, "mixvpr", DIM)
    branch = create_branch(BACKBONE, 3, "mixvpr", DIM, image_hw=HW, out_index=3).eval()
    assert branch.aggregator.feature_hw == (3, 4)  # stage 3 of a ResNet: stride 16
    with torch.no_grad():
        out = branch.embed(_raw_input(3, batch=2, hw=(96, 128)))  # serving at another size
    assert out.shape == (2, DIM)


def test_spec_rebuilds_the_same_module():
    branch = create_branch(BACKBONE, 8, "netvlad", DIM, aggregator_kwargs={"clusters": 4})
    clone = create_branch(**branch.spec)
    clone.load_state_dict(branch.state_dict())
    x = branch.preprocess(_raw_input(8, batch=2))
    torch.testing.assert_close(branch.eval()(x), clone.eval()(x))


def test_netvlad_kmeans_init_sets_centroids():
    branch = create_branch(BACKBONE, 3, "netvlad", DIM, aggregator_kwargs={"clusters": 4})
    with torch.no_grad():
        feats = branch.features(branch.preprocess(_raw_input(3)))
    branch.aggregator.init_clusters(feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]),
                                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(branch.aggregator.centroids.norm(dim=1), torch.ones(4))


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator("gem")(type("Other", (nn.Module,), {}))


def test_rgb_to_tensor_normalises_with_imagenet_stats():
    rgb = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    x = rgb_to_tensor(rgb)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                             (1 - 0.406) / 0.225]))
    assert rgb_to_tensor(rgb, normalize=False).max() == 1.0
    with pytest.raises(TypeError):
        rgb_to_tensor(rgb.float())


def test_seg_to_onehot_with_and_without_void():
    ids = torch.tensor([[[0, 1], [7, 5]]], dtype=torch.uint8)  # [1, 2, 2]
    full = seg_to_onehot(ids, 8)
    assert full.shape == (1, 8, 2, 2)
    assert full.sum(dim=1).eq(1).all() and full[0, 7, 1, 0] == 1 and full[0, 0, 0, 0] == 1
    no_void = seg_to_onehot(ids, 8, drop_void=True)
    assert no_void.shape == (1, 7, 2, 2)
    assert no_void[0, :, 0, 0].sum() == 0 and no_void[0, 0, 0, 1] == 1  # flat is channel 0 without void
    with pytest.raises(ValueError):
        seg_to_onehot(torch.tensor([[8]]), 8)


def test_color_jitter_is_seeded_per_sample_and_in_range():
    x = torch.rand(4, 3, 8, 8)
    jitter = ColorJitter()
    a = jitter(x, torch.Generator().manual_seed(1))
    b = jitter(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1
    same_image = x[:1].expand(4, -1, -1, -1)
    out = jitter(same_image, torch.Generator().manual_seed(2))
    assert not torch.allclose(out[0], out[1])  # each sample draws its own factors
    with pytest.raises(ValueError):
        ColorJitter(brightness=1.5)


def test_branch_preprocess_applies_jitter_to_place_batches():
    branch = create_branch(BACKBONE, 3, "gem", DIM)
    rgb = _raw_input(3, batch=6).view(2, 3, 3, *HW)  # [P, K, 3, H, W]
    plain = branch.preprocess(rgb)
    jittered = branch.preprocess(rgb, ColorJitter(), torch.Generator().manual_seed(0))
    assert jittered.shape == plain.shape == (2, 3, 3, *HW)
    assert not torch.allclose(plain, jittered)


def test_flatten_views_repeats_labels():
    x = torch.arange(2 * 3 * 5).view(2, 3, 5)
    flat, labels = flatten_views(x, torch.tensor([10, 20]))
    assert flat.shape == (6, 5)
    assert labels.tolist() == [10, 10, 10, 20, 20, 20]
    torch.testing.assert_close(flat[4], x[1, 1])


def test_seg_to_onehot_matches_torch_one_hot_on_batches():
    ids = torch.randint(0, 8, (2, 3, 5, 7), dtype=torch.uint8)
    expected = torch.nn.functional.one_hot(ids.long(), 8).movedim(-1, -3).float()
    assert torch.equal(seg_to_onehot(ids, 8), expected)


@pytest.mark.parametrize("in_chans", [3, 8])
def test_for_inference_gives_the_same_descriptors_in_channels_last(in_chans):
    torch.manual_seed(0)
    branch = create_branch(BACKBONE, in_chans, "gem", DIM, image_hw=HW).eval()
    raw = _raw_input(in_chans, batch=2)
    with torch.inference_mode():
        before = branch.embed(raw)
        branch.for_inference()
        after = branch.embed(raw)
    assert not branch.training and branch.inference_channels_last
    conv_weights = [p for p in branch.parameters() if p.dim() == 4]
    assert conv_weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    assert torch.allclose(before, after, atol=1e-5)


def test_spec_keys_name_exactly_what_a_branch_spec_holds():
    from structvpr.platform.models import create_branch
    from structvpr.platform.models.branch import SPEC_KEYS

    branch = create_branch("test_resnet", 3, "gem", 16)
    assert set(branch.spec) == set(SPEC_KEYS)
