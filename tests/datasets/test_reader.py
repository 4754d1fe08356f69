"""The training-side reader: P places x K views batches, split across two fake ranks, and the ordered eval reader."""

from __future__ import annotations

import itertools

import pytest
import torch

from structvpr.datasets.shards.build import BuildOptions, build_shards
from structvpr.datasets.shards.reader import (
    EpochSlices, PlaceBatchConfig, eval_samples, place_batches, place_stream, train_urls,
)

from vg_tree import make_vg_tree

SIZE = (40, 32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, ray_local):
    root = make_vg_tree(tmp_path_factory.mktemp("vg"), places={"train": 24, "val": 3}, queries_per_place=2)
    out = tmp_path_factory.mktemp("shards") / "out"
    # 3 images per place and 9 per shard: 8 train shards of 3 places.
    build_shards("vg", root, out, BuildOptions(image_size=SIZE, shard_images=9, progress=False))
    return out


def places_seen(pipeline) -> list[int]:
    return [int(p) for batch in pipeline for p in batch["place"]]


def test_two_ranks_split_the_places_without_overlap(shards):
    cfg = PlaceBatchConfig(places_per_batch=1, views_per_place=2, resampled=False, shuffle_buffer=4)
    urls = train_urls(shards)
    rank0 = places_seen(place_batches(urls, cfg, rank=0, world_size=2))
    rank1 = places_seen(place_batches(urls, cfg, rank=1, world_size=2))
    assert len(rank0) == len(rank1) == 12
    assert not set(rank0) & set(rank1)
    assert sorted(rank0 + rank1) == list(range(24))


def test_resampled_ranks_get_equal_batches_of_p_places_by_k_views(shards):
    cfg = PlaceBatchConfig(places_per_batch=4, views_per_place=4, resampled=True, batches_per_epoch=5, shuffle_buffer=8)
    urls = train_urls(shards)
    batches = {rank: list(place_batches(urls, cfg, rank=rank, world_size=2)) for rank in (0, 1)}
    assert len(batches[0]) == len(batches[1]) == 5
    batch = batches[0][0]
    assert batch["rgb"].shape == (4, 4, 3, SIZE[1], SIZE[0]) and batch["rgb"].dtype == torch.uint8
    assert batch["seg"].shape == (4, 4, SIZE[1], SIZE[0])
    assert batch["place"].shape == (4,)
    views = batch["views"]
    assert views.shape == (4, 4) and views.min() >= 0 and views.max() <= 2  # 3 views stored per place
    order0 = [b["keys"] for b in batches[0]]
    order1 = [b["keys"] for b in batches[1]]
    assert order0 != order1, "ranks must draw different samples"


def test_reader_runs_in_dataloader_workers(shards):
    cfg = PlaceBatchConfig(places_per_batch=2, views_per_place=3, resampled=True, batches_per_epoch=3, shuffle_buffer=4)
    pipeline = place_batches(train_urls(shards), cfg, rank=0, world_size=1)
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
    got = list(loader)
    assert len(got) == 6  # with_epoch counts per worker
    assert got[0]["rgb"].shape == (2, 3, 3, SIZE[1], SIZE[0])


class CountingStream:
    """An endless stream of (worker, n) that counts how often it was (re)started, per process."""

    starts = 0

    def __call__(self):
        CountingStream.starts += 1
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else -1
        return ((worker, n) for n in itertools.count())


def test_epoch_slices_go_on_where_the_last_epoch_stopped():
    CountingStream.starts = 0
    stream = EpochSlices(CountingStream(), per_epoch=4)
    epochs = [list(stream) for _ in range(3)]
    assert [[n for _, n in e] for e in epochs] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert CountingStream.starts == 1, "the stream (and its shuffle buffer) must not be rebuilt each epoch"


def test_epoch_slices_share_an_epoch_between_persistent_loader_workers():
    loader = torch.utils.data.DataLoader(EpochSlices(CountingStream(), per_epoch=5), batch_size=None,
                                         num_workers=2, persistent_workers=True)
    epochs = [[(int(w), int(n)) for w, n in loader] for _ in range(2)]
    assert [len(e) for e in epochs] == [5, 5]
    seen = epochs[0] + epochs[1]
    assert len(set(seen)) == 10, "each worker's stream goes on across epochs: nothing is drawn twice"
    assert {w for w, _ in seen} == {0, 1}


def test_place_stream_reads_only_the_members_asked_for(shards):
    cfg = PlaceBatchConfig(places_per_batch=2, views_per_place=2, batches_per_epoch=2, shuffle_buffer=4, members=("seg",))
    batches = [b for _ in range(2) for b in place_stream(train_urls(shards), cfg, rank=0, world_size=1)]
    assert len(batches) == 4
    assert "rgb" not in batches[0] and batches[0]["seg"].shape == (2, 2, SIZE[1], SIZE[0])
    with pytest.raises(ValueError, match="members"):
        PlaceBatchConfig(members=("depth",))


def test_place_stream_epochs_draw_new_batches(shards):
    cfg = PlaceBatchConfig(places_per_batch=4, views_per_place=2, batches_per_epoch=3, shuffle_buffer=8)
    stream = place_stream(train_urls(shards), cfg, rank=0, world_size=1)
    first, second = ([b["keys"] for b in stream] for _ in range(2))
    assert len(first) == len(second) == 3 and first != second
    again = place_stream(train_urls(shards), cfg, rank=0, world_size=1)
    assert [b["keys"] for b in again] == first, "a stream restarted at the same epoch draws the same batches"


def test_resampled_without_epoch_length_is_refused(shards):
    with pytest.raises(ValueError, match="batches_per_epoch"):
        place_batches(train_urls(shards), PlaceBatchConfig(resampled=True), rank=0, world_size=1)


def test_eval_reader_is_ordered_and_complete(shards):
    keys = [s["key"] for s in eval_samples(shards, "val", "queries")]
    assert keys == sorted(keys) and len(keys) == 6
    metas = [s["meta"] for s in eval_samples(shards, "val", "database")]
    assert all(m["role"] == "database" for m in metas)
