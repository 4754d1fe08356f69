"""eval.shards: training that validates on another shard folder (GSV-Cities has no val split; its models are
validated on Pitts30k val), checked before any Ray work, and invisible in run names when unset. The `train_only`
shards: tests/platform/conftest.py."""

from __future__ import annotations

import json

import pytest

from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import MANIFEST
from structvpr.platform.jobs import launcher
from structvpr.platform.jobs.launcher import load_recipe, run_training
from structvpr.platform.jobs.single_job import absolute_paths, run_name
from structvpr.platform.recipe import DataSection, EvalSection, Recipe

TINY = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
        "data.batches_per_epoch=2", "train.epochs=1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("eval-shards-runs")


def overrides(workdir, shards, eval_shards, *extra):
    return [f"data.shards={shards}", f"eval.shards={eval_shards}", f"run.storage_path={workdir / 'ckpt'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", *TINY, *extra]


# A teacher trained on train-only shards and validated on the eval shards: the fault-tolerance test's job
# (tests/platform/test_fault_tolerance.py), which checks the eval shards' tags and metrics after its restart.


@pytest.fixture
def no_ray_job(monkeypatch):
    """Refusals must come before any job: reaching train_job fails the test."""
    def train_job(*args, **kwargs):
        raise AssertionError("a Ray job was started")

    monkeypatch.setattr(launcher, "train_job", train_job)


def copy_manifest(source, out, change) -> None:
    """A shard folder whose manifest differs in one key: the checks read only the manifest."""
    data = json.loads((source / MANIFEST).read_text())
    change(data)
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(data))


def test_eval_shards_unlike_the_training_shards_are_refused(no_ray_job, train_only, tiny_shards, tmp_path, workdir):
    other_size, fewer_categories = tmp_path / "80x60", tmp_path / "fewer-categories"
    copy_manifest(tiny_shards, other_size, lambda d: d.update(image_size=[80, 60]))
    copy_manifest(tiny_shards, fewer_categories, lambda d: d["segmentation"]["class_map"]["categories"].pop("7"))
    cases = [
        (train_only, r"the val set in eval\.shards .*train-only.* has no database images"),
        (other_size, r"eval\.shards .*80x60 are 80x60 but data\.shards .* are 64x48.*--size 64x48"),
        (fewer_categories, r"eval\.shards .*fewer-categories hold 7 segmentation categories .* hold 8"),
        (tmp_path / "nowhere", r"eval\.shards .*nowhere: no manifest\.json"),
    ]
    for eval_shards, message in cases:
        with pytest.raises(DatasetError, match=message):
            run_training("teacher", "configs/tiny/teacher.yaml", overrides(workdir, tiny_shards, eval_shards),
                         progress=False)


def test_training_shards_without_the_split_point_at_eval_shards(no_ray_job, train_only, workdir):
    with pytest.raises(DatasetError, match=r"the val set in .*train-only.* set eval\.shards=DIR"):
        run_training("teacher", "configs/tiny/teacher.yaml", [f"data.shards={train_only}", *TINY], progress=False)


def test_eval_shards_are_made_absolute_for_workers_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = absolute_paths(load_recipe("teacher", None, ["data.shards=train", "eval.shards=pitts/val-shards"]))
    assert recipe.eval.shards == str(tmp_path.resolve() / "pitts" / "val-shards")
    assert recipe.eval_shards == recipe.eval.shards
    unset = absolute_paths(load_recipe("teacher", None, ["data.shards=train"]))
    assert unset.eval.shards == "" and unset.eval_shards == str(tmp_path.resolve() / "train")


def test_run_names_without_eval_shards_are_unchanged():
    """Names computed before eval.shards existed: runs named then still resume; a set eval.shards is a new run."""
    from structvpr.tuning.section import TuneSection
    from structvpr.tuning.sweep import Sweep

    teacher = Recipe(data=DataSection(shards="/fixed/shards"))
    student = Recipe(kind="student", teacher="/fixed/teacher", data=DataSection(shards="/fixed/shards"))
    assert run_name(teacher) == "teacher-7ade5059dc"
    assert run_name(student) == "student-97e6422565"
    assert Sweep(student, TuneSection(space={"kd.lam": {"loguniform": [0.1, 10]}}), {}, None).name == "sweep-6028df63ab"
    elsewhere = Recipe(data=DataSection(shards="/fixed/shards"), eval=EvalSection(shards="/fixed/pitts"))
    assert run_name(elsewhere).startswith("teacher-") and run_name(elsewhere) != "teacher-7ade5059dc"


def test_sweep_trials_validate_on_the_eval_shards():
    """Each trial's recipe is rebuilt from the sweep's mapping: eval.shards must survive it."""
    from dataclasses import asdict

    from structvpr.tuning.trial import SweepContext, trial_recipe

    base = Recipe(kind="student", teacher="/fixed/teacher", data=DataSection(shards="/fixed/gsv"),
                  eval=EvalSection(shards="/fixed/pitts"))
    context = SweepContext(asdict(base), "sweep-x", "", "", {})
    trial = trial_recipe(context, {"kd.lam": 2.0}, "t1")
    assert (trial.eval_shards, trial.data.shards, trial.kd.lam) == ("/fixed/pitts", "/fixed/gsv", 2.0)
