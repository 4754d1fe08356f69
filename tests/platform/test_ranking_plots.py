"""Ranking figures: the r_T histogram, the noisiest views from real shards, weighting group shares; empty inputs."""

import json

import pytest

from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.datasets.shards.reader import place_label
from structvpr.datasets.shards.tar_reader import read_tar_samples
from structvpr.platform.ranking.plots import plot_group_shares, plot_noisiest, plot_rank_histogram
from structvpr.platform.ranking.table import RankRow, RanksTable

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC


def row(key="train_place_0000001", view=0, condition="day", r_t=1, sim_pos=0.9, sim_neg=0.5,
        top_key="train_place_0000002", top_view=0):
    return RankRow(key, place_label(key), view, condition, 0, r_t, sim_pos, sim_neg, top_key, top_view)


def test_rank_histogram(tmp_path):
    rows = [row(view=v, condition=c, r_t=r) for v, (c, r) in
            enumerate([("day", 1), ("day", 3), ("night", 40), ("night", 2500), ("", 1), ("day", 700)])]
    out = plot_rank_histogram(RanksTable("abc", rows), tmp_path / "sub" / "hist.png", noisy_rank=100)
    assert out == tmp_path / "sub" / "hist.png"
    assert_png(out)


def test_rank_histogram_of_an_empty_table(tmp_path):
    assert_png(plot_rank_histogram(RanksTable("abc", []), tmp_path / "hist.png", noisy_rank=10))


def test_group_shares(tmp_path):
    counts = {"group_noisy": 3, "group_teacher_right_student_wrong": 5, "group_both_right": 10, "group_other": 2,
              "group_noisy.night": 2, "group_both_right.night": 1, "group_noisy.day": 1, "group_other.day": 3}
    history = [{"epoch": 1, "train_loss": 1.0},  # no counts: skipped
               {"epoch": 2, **counts},
               {"epoch": 3, "group_noisy": 1, "group_both_right": 4, "group_noisy.day": 1}]  # missing keys: 0
    assert_png(plot_group_shares(history, tmp_path / "groups.png"))


def test_group_shares_without_counts(tmp_path):
    assert_png(plot_group_shares([{"epoch": 1, "train_loss": 0.5}], tmp_path / "groups.png"))


@pytest.fixture(scope="module")
def train_views(tiny_shards):
    """(key, stored view count) of every training place sample of the tiny city."""
    urls = Manifest.load(tiny_shards).shard_paths("train", "places")
    return [(s["__key__"], json.loads(s["json"])["num_views"]) for s in read_tar_samples(urls)]


def test_noisiest_from_real_shards(tiny_shards, train_views, tmp_path):
    assert len(train_views) >= 3
    rows = [row(key=key, view=views - 1, r_t=i + 1, sim_pos=0.3, sim_neg=0.4,
                top_key=train_views[(i + 1) % len(train_views)][0], top_view=0)
            for i, (key, views) in enumerate(train_views)]
    assert_png(plot_noisiest(RanksTable("abc", rows), str(tiny_shards), tmp_path / "noisiest.png", n=3))


def test_noisiest_names_a_key_the_shards_lack(tiny_shards, train_views, tmp_path):
    key = train_views[0][0]
    rows = [row(key=key, r_t=9, top_key="train_place_9999999")]
    with pytest.raises(DatasetError, match="train_place_9999999"):
        plot_noisiest(RanksTable("abc", rows), str(tiny_shards), tmp_path / "noisiest.png")
    assert not (tmp_path / "noisiest.png").exists()


def test_noisiest_names_a_view_the_sample_lacks(tiny_shards, train_views, tmp_path):
    key, views = train_views[0]
    rows = [row(key=key, view=views, r_t=9, top_key=key)]
    with pytest.raises(DatasetError, match=f"{key}.*no view {views}"):
        plot_noisiest(RanksTable("abc", rows), str(tiny_shards), tmp_path / "noisiest.png")


def test_noisiest_of_an_empty_table(tmp_path):
    assert_png(plot_noisiest(RanksTable("abc", []), "unused", tmp_path / "noisiest.png"))
