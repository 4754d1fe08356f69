"""Out-of-fold ranks, piece by piece: spatial folds with their buffer, the ranks table file, a fold teacher's
ranking, and a fold teacher's loader that never reads its held-out places."""

from __future__ import annotations

import itertools

import pytest
import torch

from structvpr.config import ConfigError
from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.datasets.shards.reader import PlaceBatchConfig, place_batches, train_urls
from structvpr.platform.models import create_branch
from structvpr.platform.ranking.folds import TrainingView, plan_folds, training_views
from structvpr.platform.ranking.rank import rank_fold
from structvpr.platform.ranking.table import RankRow, RanksTable


def grid_views(columns: int = 12, rows: int = 3, spacing: float = 10.0) -> list[TrainingView]:
    """Places on a grid `spacing` metres apart, two views each."""
    views = []
    for place, (x, y) in enumerate(itertools.product(range(columns), range(rows))):
        views += [TrainingView(f"train_place_{place:07d}", place, v, x * spacing + v, y * spacing, "day") for v in range(2)]
    return views


def test_every_place_is_in_one_fold_and_blocks_stay_together():
    views = grid_views()
    plan = plan_folds(views, folds=3, block_m=40.0, radius_m=15.0, seed=0)
    assert set(plan.fold_of) == {v.place for v in views} and set(plan.fold_of.values()) == {0, 1, 2}
    by_block = {}
    for v in views:
        by_block.setdefault((int(v.east // 40), int(v.north // 40)), set()).add(plan.fold_of[v.place])
    assert all(len(folds) == 1 for folds in by_block.values()), "a spatial block was split between folds"
    sizes = [len(plan.held_out(f)) for f in range(3)]
    assert max(sizes) - min(sizes) <= 12  # balanced to within one block (12 places a block here)


def test_the_buffer_holds_out_every_neighbour_within_the_radius():
    views = grid_views()
    plan = plan_folds(views, folds=3, block_m=40.0, radius_m=15.0, seed=0)
    centre = {v.place: (v.east - v.view, v.north) for v in views}  # views of a place are 1 m apart
    for fold in range(3):
        held = set(plan.held_out(fold))
        assert held <= plan.excluded[fold]
        for place in plan.fold_of:
            near = any(abs(centre[place][0] - centre[h][0]) <= 10 and centre[place][1] == centre[h][1] for h in held)
            far = all(((centre[place][0] - centre[h][0]) ** 2 + (centre[place][1] - centre[h][1]) ** 2) ** 0.5 > 16
                      for h in held)
            if near:
                assert place in plan.excluded[fold], f"place {place} is {10} m from fold {fold} but trains its teacher"
            if far:
                assert place not in plan.excluded[fold]


def test_folds_are_deterministic_from_the_seed():
    views = grid_views()
    first = plan_folds(views, folds=3, block_m=40.0, radius_m=15.0, seed=0)
    assert plan_folds(views, folds=3, block_m=40.0, radius_m=15.0, seed=0) == first
    assert any(plan_folds(views, folds=3, block_m=40.0, radius_m=15.0, seed=s).fold_of != first.fold_of
               for s in range(1, 6))


def test_more_folds_than_blocks_is_refused():
    with pytest.raises(ConfigError, match=r"folds=5 but the training places fill only 3 spatial block"):
        plan_folds(grid_views(columns=12, rows=1), folds=5, block_m=40.0, radius_m=15.0, seed=0)


def rows(n: int = 3) -> list[RankRow]:
    return [RankRow(f"train_place_{i:07d}", i, 0, "night", i % 2, i + 1, 0.9, 0.8, "train_place_0000009", 1)
            for i in range(n)]


def test_ranks_table_round_trip(tmp_path):
    table = RanksTable("abc123", rows())
    again = RanksTable.read(table.write(tmp_path / "ranks.csv"))
    assert again == table and again.rank_of() == {(0, 0): 1, (1, 0): 2, (2, 0): 3}


def test_a_write_cut_short_leaves_the_table_before_it_whole(tmp_path, monkeypatch):
    """A fold's ranks file marks its ranking done, so a resumed command trusts it: a driver killed mid-write
    must not leave half a table there (it did: the rows after the cut were then missing)."""
    from pathlib import Path

    path = RanksTable("abc123", rows(3)).write(tmp_path / "ranks_fold.csv")
    real = Path.write_text

    def cut_short(self, text, *args, **kwargs):  # what a kill or a full disk leaves: part of the text
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(OSError):
        RanksTable("abc123", rows(50)).write(path)
    monkeypatch.undo()
    assert RanksTable.read(path) == RanksTable("abc123", rows(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ranks_fold.csv"], "no temporary file is left behind"


@pytest.mark.parametrize("text, named", [
    ("key,place\n", "first line"),
    ("# manifest_sha256=abc\nkey,place\n", "the header must be"),
    ("# manifest_sha256=abc\nkey,place,view,condition,fold,r_t,sim_pos,sim_neg,top_key,top_view\n"
     "k,1,0,day,0,three,0.1,0.2,j,0\n", "line 3"),
    ("# manifest_sha256=abc\nkey,place,view,condition,fold,r_t,sim_pos,sim_neg,top_key,top_view\n"
     "k,1,0,day,0,0,0.1,0.2,j,0\n", "r_t must be >= 1"),
])
def test_malformed_tables_are_refused_by_line(tmp_path, text, named):
    path = tmp_path / "ranks.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=named):
        RanksTable.read(path)


def test_a_table_of_other_shards_or_with_missing_rows_does_not_fit():
    table = RanksTable("abc123", rows(2))
    with pytest.raises(DatasetError, match="belongs to other shards"):
        table.check_fits("fff", [(0, 0), (1, 0)], "t.csv")
    with pytest.raises(DatasetError, match="no row for 1 of 3 training views"):
        table.check_fits("abc123", [(0, 0), (1, 0), (2, 0)], "t.csv")
    table.check_fits("abc123", [(0, 0), (1, 0)], "t.csv")


def test_a_fold_teacher_ranks_its_own_fold_against_the_whole_gallery(tiny_shards):
    manifest = Manifest.load(tiny_shards)
    views = training_views(manifest)
    plan = plan_folds(views, folds=2, block_m=100.0, radius_m=25.0, seed=0)
    width, height = manifest.image_size
    torch.manual_seed(0)
    teacher = create_branch("test_resnet", manifest.num_categories, "gem", 16, image_hw=(height, width),
                            num_classes=manifest.num_categories).for_inference()
    ranked = rank_fold(teacher, str(tiny_shards), views, plan.fold_of, fold=1)
    assert sorted((r.place, r.view) for r in ranked) == sorted((v.place, v.view) for v in views if plan.fold_of[v.place] == 1)
    for row in ranked:
        assert row.fold == 1 and row.r_t >= 1 and row.top_key != row.key
        # rank 1 exactly when the best positive beats the hardest negative (ties favour the positive)
        assert (row.r_t == 1) == (row.sim_pos >= row.sim_neg - 1e-6)
    assert any(r.r_t > 1 for r in ranked), "an untrained teacher should get some views wrong"


def test_a_fold_teachers_loader_never_reads_its_held_out_places(tiny_shards):
    views = training_views(Manifest.load(tiny_shards))
    places = sorted({v.place for v in views})
    excluded = frozenset(places[::2])
    cfg = PlaceBatchConfig(places_per_batch=4, views_per_place=2, batches_per_epoch=12, members=("seg",),
                           exclude_places=excluded)
    seen = {int(p) for batch in place_batches(train_urls(tiny_shards), cfg, 0, 1) for p in batch["place"]}
    assert seen and not seen & excluded and seen <= set(places) - excluded


def test_fold_teacher_targets_keep_each_row_in_its_own_teachers_space():
    """kd.teacher_source=folds: row i of the teacher's similarity logits comes from the fold teacher of i's place,
    computed over the whole batch by that teacher; with one teacher it is plain similarity KL."""
    from types import SimpleNamespace

    from structvpr.platform.jobs.job_kind import StudentKind
    from structvpr.platform.losses.kd import _off_diagonal_logits, kd_kl_from_teacher_logits, kd_similarity_kl

    torch.manual_seed(0)
    teachers = [torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)]
    for t in teachers:
        t.embed = t.forward
    seg, labels = torch.randn(6, 6), torch.tensor([0, 0, 1, 1, 2, 2])
    job = SimpleNamespace(fold_teachers=teachers, fold_of_place={0: 1, 1: 0, 2: 1},
                          recipe=SimpleNamespace(kd=SimpleNamespace(tau=0.1)))
    logits = StudentKind.fold_teacher_logits(job, seg, labels)
    by_teacher = [_off_diagonal_logits(t(seg), 0.1) for t in teachers]
    for i, place in enumerate(labels.tolist()):
        assert torch.allclose(logits[i], by_teacher[job.fold_of_place[place]][i])
    student = torch.randn(6, 5)
    assert torch.allclose(kd_kl_from_teacher_logits(student, by_teacher[0], 0.1),
                          kd_similarity_kl(student, teachers[0](seg), 0.1))


def test_fold_teachers_are_read_from_checkpoints_where_they_exist_else_from_their_runs(tmp_path):
    from structvpr.platform.ranking.lookup import _usable_refs

    (tmp_path / "c0").mkdir()
    (tmp_path / "c1").mkdir()
    folds = {"checkpoints": [str(tmp_path / "c0"), str(tmp_path / "c1")], "models": ["runs:/a/model", "runs:/b/model"]}
    assert _usable_refs(folds) == folds["checkpoints"]
    (tmp_path / "c1").rmdir()  # another machine, without the teacher's storage
    assert _usable_refs(folds) == folds["models"]
