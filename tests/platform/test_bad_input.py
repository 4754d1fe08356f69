"""The bad-input matrix of the training commands: every path, number and reference they take gets a bad value.

Each case runs `structvpr ...` in-process and checks what a user sees: exit status 2, one line
`structvpr: error: ...` that names the bad value, no traceback, and nothing written or deleted
in the working folder. Every case fails before Ray or MLflow start: checks come first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from structvpr.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
TEACHER = ["train", "teacher", "--config", str(CONFIGS / "teacher.yaml")]
STUDENT = ["train", "student", "--config", str(CONFIGS / "student.yaml")]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def run_cli(argv, folder, capsys, monkeypatch):
    """(exit status, stderr) of `structvpr argv` run in `folder`, which must be left as it was."""
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert snapshot(folder) == before, "a refused command wrote or deleted files"
    return code, err


def assert_refused(code, err, *named):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and ": error:" in lines[-1], err
    for text in named:
        assert text in lines[-1], f"{text!r} not named in: {lines[-1]}"


@pytest.fixture
def inputs(tmp_path):
    """A working folder with a few bad files and folders to name."""
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("data: {shards: [unclosed\n")
    (tmp_path / "crafted.yaml").write_text('data: !!python/object/apply:os.system ["touch PWNED"]\n')
    (tmp_path / "nomanifest").mkdir()
    (tmp_path / "badmanifest").mkdir()
    (tmp_path / "badmanifest" / "manifest.json").write_text('{"image_size": [64')
    return tmp_path


RECIPE_CASES = [
    # (extra argv, text the message must name)
    (["data.shards=nowhere"], "nowhere"),
    (["data.shards=nomanifest"], "nomanifest"),
    (["data.shards=badmanifest"], "manifest.json"),
    (["data.shards=garbage.pt"], "garbage.pt"),
    (["train.epochs=0"], "train.epochs"),
    (["train.epochs=many"], "many"),
    (["train.lr=-1"], "train.lr"),
    (["train.lr=.nan"], "nan"),
    (["train.seed=1.5"], "train.seed"),
    (["data.places_per_batch=0"], "data.places_per_batch"),
    (["data.views_per_place=1"], "data.views_per_place"),
    (["data.batches_per_epoch=-3"], "data.batches_per_epoch"),
    (["scaling.num_workers=0"], "scaling.num_workers"),
    (["scaling.cpus_per_worker=-1"], "scaling.cpus_per_worker"),
    (["scaling.memory_per_worker_gb=-2"], "scaling.memory_per_worker_gb"),
    (["scaling.use_gpu=maybe"], "maybe"),
    (["scaling.placement_strategy=EVERYWHERE"], "EVERYWHERE"),
    (["run.name=../../escape"], "../../escape"),
    (["run.name=/abs/path"], "/abs/path"),
    (["run.max_failures=-1"], "run.max_failures"),
    (["eval.radius_m=-5"], "eval.radius_m"),
    (["eval.n_values=[0,5]"], "eval.n_values"),
    (["kd.mode=bogus"], "bogus"),
    (["kd.loss=cosine"], "cosine"),
    (["kd.lam=-1"], "kd.lam"),
    (["kd.tau=0"], "kd.tau"),
    (["kd.weighting.noisy_rank=0"], "noisy_rank"),
    (["kd.weighting.w_high=-1"], "w_high"),
    (["folds=1"], "folds"),
    (["folds=-2"], "folds"),
    (["fold_block_m=0"], "fold_block_m"),
    (["folds=2", "fold=5"], "fold"),
    (["kd.ranks=sideways"], "sideways"),
    (["kd.teacher_source=everywhere"], "everywhere"),
    (["kd.teacher_source=folds"], "kd.teacher_source=folds"),
    (["train.epoch=3"], "train.epoch"),
    (["trian.epochs=3"], "trian"),
    (["train.epochs"], "train.epochs"),
]


@pytest.mark.parametrize("extra,named", RECIPE_CASES, ids=[c[0][0] for c in RECIPE_CASES])
def test_teacher_recipe_values(inputs, capsys, monkeypatch, extra, named):
    argv = TEACHER + ([] if any(e.startswith("data.shards=") for e in extra) else ["data.shards=nomanifest"])
    code, err = run_cli(argv + extra, inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


@pytest.mark.parametrize("config,named", [("nowhere.yaml", "nowhere.yaml"), ("list.yaml", "list.yaml"),
                                          ("broken.yaml", "broken.yaml"), ("crafted.yaml", "crafted.yaml"),
                                          ("garbage.pt", "garbage.pt")])
def test_recipe_files(inputs, capsys, monkeypatch, config, named):
    code, err = run_cli(["train", "teacher", "--config", config], inputs, capsys, monkeypatch)
    assert_refused(code, err, named)
    assert not (inputs / "PWNED").exists()


@pytest.mark.parametrize("teacher,named", [("teacher=nowhere.pt", "nowhere.pt"), ("teacher=garbage.pt", "garbage.pt"),
                                           ("teacher=nomanifest", "nomanifest")])
def test_student_teacher_references(inputs, tiny_shards, capsys, monkeypatch, teacher, named):
    code, err = run_cli(STUDENT + [f"data.shards={tiny_shards}", teacher], inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


def test_student_without_teacher(inputs, capsys, monkeypatch):
    code, err = run_cli(STUDENT + ["data.shards=nomanifest", "kd.mode=plain"], inputs, capsys, monkeypatch)
    assert_refused(code, err, "teacher")


EVAL_CASES = [
    (["--model", "garbage.pt", "--shards", "nowhere"], "nowhere"),
    (["--model", "garbage.pt", "--shards", "badmanifest"], "manifest.json"),
    (["--model", "nowhere.pt", "--shards", "{shards}"], "nowhere.pt"),
    (["--model", "garbage.pt", "--shards", "{shards}"], "garbage.pt"),
    (["--model", "garbage.pt", "--shards", "{shards}", "--split", "winter"], "winter"),
    (["--model", "garbage.pt", "--shards", "{shards}", "--radius", "-5"], "-5"),
    (["--model", "garbage.pt", "--shards", "{shards}", "--radius", "nan"], "nan"),
    (["--model", "garbage.pt", "--shards", "{shards}", "--radius", "far"], "far"),
]


@pytest.mark.parametrize("args,named", EVAL_CASES, ids=[" ".join(c[0][1::2]) + " " + c[1] for c in EVAL_CASES])
def test_eval_arguments(inputs, tiny_shards, capsys, monkeypatch, args, named):
    argv = ["eval"] + [a.format(shards=tiny_shards) for a in args]
    code, err = run_cli(argv, inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


@pytest.mark.parametrize("args,named", [(["--preset", "bogus"], "bogus"), (["--seed", "-1"], "-1"),
                                        (["--workdir", "garbage.pt"], "garbage.pt")])
def test_demo_arguments(inputs, capsys, monkeypatch, args, named):
    argv = ["demo", "--workdir", "demo-out", "--preset", "tiny", *args]
    code, err = run_cli(argv, inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


@pytest.fixture
def ranks_inputs(inputs, tiny_shards):
    """A teacher checkpoint (random weights, fitting tiny_shards) in a run folder without a ranks table,
    and ranks tables that do not fit: of other shards, missing rows, malformed."""
    import torch

    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.models import create_branch
    from structvpr.platform.ranking.folds import training_views
    from structvpr.platform.ranking.table import RankRow, RanksTable
    from structvpr.platform.store.checkpoint import save_state

    manifest = Manifest.load(tiny_shards)
    width, height = manifest.image_size
    teacher = create_branch("test_resnet", manifest.num_categories, "gem", 16, image_hw=(height, width),
                            num_classes=manifest.num_categories)
    (inputs / "teacher-run" / "checkpoint_0").mkdir(parents=True)
    save_state(inputs / "teacher-run" / "checkpoint_0", teacher, None, None, 1,
               {"trained_on": {"image_size": [width, height], "kind": "teacher"}})
    rows = [RankRow(v.key, v.place, v.view, v.condition, 0, 1, 0.9, 0.5, v.key, v.view)
            for v in training_views(manifest)]
    RanksTable("0" * 64, rows).write(inputs / "other-shards.csv")
    RanksTable(manifest.hash, rows[:-1]).write(inputs / "partial.csv")
    RanksTable(manifest.hash, rows).write(inputs / "fits.csv")
    (inputs / "malformed.csv").write_text((inputs / "partial.csv").read_text() + "k,1,0,day,0,first,0.1,0.2,j,0\n")
    return inputs


OOF = ["kd.mode=weighted", "kd.ranks=out_of_fold", "teacher=teacher-run/checkpoint_0"]


@pytest.mark.parametrize("extra,named", [
    ([], "has no ranks.csv"),
    (["kd.teacher_source=folds"], "has no ranks.csv"),
    (["kd.teacher_ranks=other-shards.csv"], "belongs to other shards"),
    (["kd.teacher_ranks=partial.csv"], "has no row for 1 of"),
    (["kd.teacher_ranks=malformed.csv"], "malformed.csv, line"),
    (["kd.teacher_ranks=nowhere.csv"], "nowhere.csv"),
    (["kd.teacher_ranks=fits.csv", "kd.teacher_source=folds"], "has no folds.json"),
    (["kd.teacher_source=folds", "kd.loss=mse"], "kd.loss=kl"),
    (["kd.teacher_source=folds", "kd.ranks=in_fold"], "kd.ranks=out_of_fold"),
], ids=["no table", "no table for folds", "other shards", "missing rows", "malformed", "missing file", "no fold list",
        "folds with mse", "folds with in-fold ranks"])
def test_out_of_fold_ranks_that_do_not_fit(ranks_inputs, tiny_shards, capsys, monkeypatch, extra, named):
    code, err = run_cli(STUDENT + [f"data.shards={tiny_shards}", *OOF, *extra], ranks_inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


def test_more_folds_than_spatial_blocks(inputs, tiny_shards, capsys, monkeypatch):
    code, err = run_cli(TEACHER + [f"data.shards={tiny_shards}", "folds=3", "fold_block_m=100000"], inputs, capsys,
                        monkeypatch)
    assert_refused(code, err, "folds=3", "1 spatial block")


TUNE = ["tune", "--config", str(CONFIGS / "tune.yaml")]
TUNE_CASES = [
    (["tune.num_samples=0"], "tune.num_samples"),
    (["tune.num_sample=3"], "tune.num_sample"),
    (["tune.searcher=grid"], "grid"),
    (["tune.scheduler.name=hyperband"], "hyperband"),
    (["tune.mode=up"], "up"),
    (["tune.max_concurrent_trials=-1"], "tune.max_concurrent_trials"),
    (["tune.metric=val_recall_at_3"], "val_recall_at_3"),
    (["tune.scheduler.grace_period=9"], "grace_period"),
    (["tune.space.kd.lam={uniform: [3, 1]}"], "tune.space.kd.lam"),
    (["tune.space.kd.lam={normal: [0, 1]}"], "normal"),
    (["tune.space.kd.bogus={choice: [1, 2]}"], "kd.bogus"),
    (["tune.space.kd.weighting.noisy_rank={randint: [0, 5]}"], "noisy_rank=0"),
    (["tune.points_to_evaluate=[{kd.lam: 0.5}]"], "tune.points_to_evaluate[0]"),
    (["tune.points_to_evaluate=[7]"], "tune.points_to_evaluate[0]"),
    (["tune.num_samples=1", "tune.points_to_evaluate=[{}, {}]"], "more than tune.num_samples"),
    ([], "garbage.pt"),
]


@pytest.mark.parametrize("extra,named", TUNE_CASES, ids=[c[0][0] if c[0] else "bad teacher" for c in TUNE_CASES])
def test_tune_arguments(inputs, tiny_shards, capsys, monkeypatch, extra, named):
    """Every part of a sweep is checked before Ray starts: the section, the space (each corner makes a recipe),
    the metric against what trials report, ASHA's grace period against the epochs, then the teacher."""
    code, err = run_cli(TUNE + [f"data.shards={tiny_shards}", "teacher=garbage.pt", *extra], inputs, capsys, monkeypatch)
    assert_refused(code, err, named)


def test_tune_needs_a_tune_section(inputs, capsys, monkeypatch):
    code, err = run_cli(["tune", "--config", str(CONFIGS / "student.yaml")], inputs, capsys, monkeypatch)
    assert_refused(code, err, "student.yaml", "no tune: section")
