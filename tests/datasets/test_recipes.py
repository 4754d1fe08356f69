"""The recipes for the real datasets (configs/pitts30k, configs/msls, configs/gsv_cities), checked against shards.

For each dataset a tiny tree in its public layout is built, and shards are written from it by the real
`structvpr data shards` code with the options of the recipe headers' own `# shards:` command (only --root, --out
and --seg-model are swapped: a local save_pretrained smp model stands in for the hub model, through the same
loading path, so nothing downloads; shards are written in this process instead of Ray Data actors). Then the
recipes go through `structvpr train teacher|student` and `structvpr tune` (cli.main) with only `data.shards=` (and
the student's `teacher=`) set, up to the point where Ray would start: the recipe keys and types, the shards and
their eval split, the fold plan, the teacher (its image size against the shards') and its ranks table, the
sweep's space and metric. GSV-Cities has no val split: its recipes validate on `eval.shards`, Pitts30k shards
built as their headers' `# eval shards:` command says (from a tiny Pitts tree), and `eval.shards=` is set too.
The models of each recipe are built at the shards' size as a Ray Train worker builds them. docs/RECIPES.md's commands are parsed by the real CLI parser, and their recipe overrides loaded.
"""

from __future__ import annotations

import re
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from structvpr import cli
from structvpr.config import load_mapping
from structvpr.datasets.shards.manifest import Manifest

from test_formats import GSV_HEADER, build_msls_folder, gsv_image, msls_row, write_csv, write_db_struct, write_image
from untrained_teacher import save_untrained_teacher

REPO = Path(__file__).resolve().parents[2]
DATASETS = ("pitts30k", "msls", "gsv_cities")
KINDS = ("teacher", "student", "tune")
FORMATS = {"pitts30k": "pitts", "msls": "msls", "gsv_cities": "gsv"}
EVAL_ELSEWHERE = ("gsv_cities",)  # no val split: validated on eval.shards (Pitts30k at the same size)
PLACES = 4  # training places, 150-220 m apart: 4 spatial blocks of 100 m for folds: 3
HUB_MODEL = re.compile(r"hub:smp-hub/[\w.-]+$")


def recipe(dataset: str, kind: str) -> Path:
    return REPO / "configs" / dataset / f"{kind}.yaml"


def header_shards_command(path: Path, label: str = "shards") -> list[str]:
    """The argv of the `# shards: structvpr data shards ...` line of a recipe's header (`# eval shards: ...`
    for the shards its eval.shards names)."""
    prefix = f"# {label}: "
    lines = [line for line in path.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"{path}: expected one '{prefix}structvpr data shards ...' header line"
    argv = shlex.split(lines[0].removeprefix(prefix))
    assert argv[:3] == ["structvpr", "data", "shards"], lines[0]
    return argv[1:]


# ---------------------------------------------------------------- tiny trees in each public layout


def pitts_tree(root: Path, test: bool = False) -> None:
    """NetVLAD's layout: datasets/pitts30k_{train,val[,test]}.mat, database images under ROOT, queries under
    queries_real."""
    east, north = 585000.0, 4477000.0
    splits = (("train", PLACES, 0.0, 0), ("val", 1, 5000.0, 100), *((("test", 1, 9000.0, 200),) if test else ()))
    for split, count, offset, first in splits:
        db = [f"{first + i:03d}/{first + i:03d}000_pitch1_yaw1.jpg" for i in range(count)]
        queries = [f"{first + i:03d}/{first + i:03d}007_pitch1_yaw3.jpg" for i in range(count)]
        utm_db = [[east + offset + 150.0 * i, north] for i in range(count)]
        utm_q = [[e + 3.0, n + 2.0] for e, n in utm_db]
        write_db_struct(root / "datasets" / f"pitts30k_{split}.mat", db, utm_db, queries, utm_q, split)
        for name in db:
            write_image(root / name)
        for name in queries:
            write_image(root / "queries_real" / name)


def msls_tree(root: Path) -> None:
    """train_val/<city>/{database,query}; val is cph and sf; a test city ships seq_info.csv only, as MSLS does."""
    london = root / "train_val" / "london"
    build_msls_folder(london / "database", [msls_row(f"db{i}", 699000.0 + 150.0 * i) for i in range(PLACES)])
    build_msls_folder(london / "query", [msls_row(f"q{i}", 699003.0 + 150.0 * i, night=True) for i in range(PLACES)])
    cph = root / "train_val" / "cph"
    build_msls_folder(cph / "database", [msls_row("cphDb", 725000.0)])
    build_msls_folder(cph / "query", [msls_row("cphQ", 725002.0)])
    for folder in ("database", "query"):
        write_csv(root / "test" / "miami" / folder / "seq_info.csv", ["", "key", "sequence_key", "frame_number"],
                  [[0, "k", "s", 1]])


def gsv_tree(root: Path) -> None:
    """Dataframes/<City>.csv and Images/<City>/...: two years of each place, places about 220 m apart."""
    rows = [[i, year, 7, 90, "London", f"{51.5 + 0.002 * i:.5f}", "-0.12776", f"pano{i}y{year}"]
            for i in range(PLACES) for year in (2016, 2019)]
    write_csv(root / "Dataframes" / "London.csv", GSV_HEADER, rows)
    for row in rows:
        gsv_image(root, row)


TREES = {"pitts30k": pitts_tree, "msls": msls_tree, "gsv_cities": gsv_tree}


# ---------------------------------------------------------------- shards, a teacher, the commands up to Ray


class ReachedRay(Exception):
    """Raised where the command would start Ray: every check before it passed."""


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    """A Cityscapes-19 smp model saved with save_pretrained: what `hub:smp-hub/...` loads, minus the download."""
    import segmentation_models_pytorch as smp

    # The smallest model that runs at 640x480 in seconds on 2 cores: a Linknet on timm's test ResNet.
    model = smp.create_model("Linknet", "tu-test_resnet", encoder_weights=None, classes=19, encoder_depth=3)
    folder = tmp_path_factory.mktemp("seg") / "segformer-stand-in"
    model.save_pretrained(folder)
    return folder


def write_shards_here(pending, out, opts, done) -> None:
    """`build.run_shard_actors` in this process: what each ShardBuildActor does, without Ray."""
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor
    from structvpr.datasets.shards.shard_writer import ShardWriter

    writer = ShardWriter(str(out), opts.image_size, SegmentationPredictor(opts.seg_model, device="cpu"))
    for spec in pending:
        writer.write(spec)


def no_ray(*args, **kwargs):
    raise AssertionError("Ray was started")


def build_shards_as_header_says(dataset: str, root: Path, out: Path, seg_model: Path,
                                label: str = "shards") -> Manifest:
    """`structvpr data shards` with the teacher recipe header's `# {label}:` options; --root, --out and
    --seg-model swapped."""
    from structvpr import runtime
    from structvpr.datasets.shards import build

    args = cli.build_parser().parse_args(header_shards_command(recipe(dataset, "teacher"), label))
    args.root, args.out, args.seg_model, args.quiet = str(root), str(out), str(seg_model), True
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "run_shard_actors", write_shards_here)
        mp.setattr(runtime, "ensure_ray", no_ray)
        assert args.func(args) == 0
    return Manifest.load(out)


class Built(NamedTuple):
    dataset: str
    shards: Path
    manifest: Manifest
    teacher: Path  # a checkpoint at the shards' size
    other_size: Path  # one at another size
    eval_shards: Path | None  # what eval.shards is set to (None: the recipe evaluates on data.shards)


@pytest.fixture(scope="module", params=DATASETS)
def built(request, tmp_path_factory, seg_model):
    dataset = request.param
    base = tmp_path_factory.mktemp(dataset)
    TREES[dataset](base / "data")
    manifest = build_shards_as_header_says(dataset, base / "data", base / "shards", seg_model)
    eval_shards = None
    if dataset in EVAL_ELSEWHERE:
        pitts_tree(base / "pitts", test=True)  # the header's command builds val and test
        build_shards_as_header_says(dataset, base / "pitts", base / "eval-shards", seg_model, "eval shards")
        eval_shards = base / "eval-shards"
    teacher = save_untrained_teacher(base / "teacher-run", manifest)
    width, height = manifest.image_size
    other = save_untrained_teacher(base / "other-size-run", manifest, (width // 2, height // 2))
    return Built(dataset, base / "shards", manifest, teacher, other, eval_shards)


@contextmanager
def stopped_before_ray():
    """`structvpr train` / `tune` run as usual up to Ray: what they would hand to Ray Train or Tune is kept."""
    from structvpr import runtime
    from structvpr.platform.jobs import launcher
    from structvpr.tuning import command

    seen: dict = {}
    real_sweep, real_inputs = command.load_sweep, launcher.student_inputs

    def train_job(recipe, manifest, progress=True, worker_inputs=None, tags=None):
        seen.update(recipe=recipe, manifest=manifest, inputs=worker_inputs or {})
        raise ReachedRay

    def train_with_folds(recipe, manifest, planned, train_full, progress=True):
        seen.update(recipe=recipe, manifest=manifest, inputs={}, folds=planned)
        raise ReachedRay

    def ensure_ray(*args, **kwargs):
        raise ReachedRay

    def load_sweep(config, overrides):
        seen["sweep"] = real_sweep(config, overrides)
        return seen["sweep"]

    def student_inputs(recipe, manifest):
        seen["inputs"] = real_inputs(recipe, manifest)
        return seen["inputs"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launcher, "train_job", train_job)
        mp.setattr(launcher, "train_with_folds", train_with_folds)
        mp.setattr(launcher, "student_inputs", student_inputs)
        mp.setattr(runtime, "ensure_ray", ensure_ray)
        mp.setattr(command, "load_sweep", load_sweep)
        yield seen


def command_argv(kind: str, config: Path, built: Built, teacher: Path | None, *extra: str) -> list[str]:
    argv = ["-q", "tune", "--config", str(config)] if kind == "tune" else ["-q", "train", kind, "--config", str(config)]
    argv.append(f"data.shards={built.shards}")
    if built.eval_shards is not None:
        argv.append(f"eval.shards={built.eval_shards}")
    if kind != "teacher":
        argv.append(f"teacher={teacher}")
    return argv + list(extra)


def reaches_ray(argv: list[str]) -> dict:
    with stopped_before_ray() as seen, pytest.raises(ReachedRay):
        cli.main(argv)
    return seen


def refused(argv: list[str], capsys) -> str:
    """The command's one error line (exit status 2, no Ray)."""
    capsys.readouterr()
    with stopped_before_ray():
        code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "structvpr: error: " in err, err
    return err


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("dataset", DATASETS)
def test_shards_command_in_the_headers_parses_and_uses_a_hub_model(dataset):
    commands = {kind: header_shards_command(recipe(dataset, kind)) for kind in KINDS}
    assert len({tuple(c) for c in commands.values()}) == 1, f"{dataset}: the three headers give different commands"
    args = cli.build_parser().parse_args(commands["teacher"])
    assert args.func is cli.cmd_data_shards and args.format == FORMATS[dataset]
    assert HUB_MODEL.match(args.seg_model), args.seg_model
    shards = load_mapping(recipe(dataset, "teacher"))["data"]["shards"]
    assert args.out == shards, f"the header writes {args.out}, the recipe reads {shards}"
    assert f"{args.size[0]}x{args.size[1]}" in shards
    with pytest.raises(SystemExit):  # the parser is strict: a header with a wrong option would fail here
        cli.build_parser().parse_args([*commands["teacher"], "--seg-modle", "gt"])


@pytest.mark.parametrize("dataset", EVAL_ELSEWHERE)
def test_eval_shards_command_in_the_headers_writes_what_eval_shards_reads(dataset):
    """The `# eval shards:` command writes Pitts30k at the size of the training shards, where eval.shards points."""
    commands = {kind: header_shards_command(recipe(dataset, kind), "eval shards") for kind in KINDS}
    assert len({tuple(c) for c in commands.values()}) == 1, f"{dataset}: the three headers give different commands"
    args = cli.build_parser().parse_args(commands["teacher"])
    train_args = cli.build_parser().parse_args(header_shards_command(recipe(dataset, "teacher")))
    assert args.format == "pitts" and args.size == train_args.size and "val" in args.splits
    assert HUB_MODEL.match(args.seg_model) and args.seg_model == train_args.seg_model
    for kind in KINDS:
        assert load_mapping(recipe(dataset, kind))["eval"]["shards"] == args.out, f"{dataset}/{kind}.yaml"


def test_shards_hold_what_the_recipes_read(built):
    size = cli.build_parser().parse_args(header_shards_command(recipe(built.dataset, "teacher"))).size
    assert built.manifest.image_size == size
    assert built.manifest.data["segmentation"]["model_id"].startswith("dir:segformer-stand-in:")
    assert built.manifest.data["splits"]["train"]["places"]["samples"] == PLACES
    assert ("val" in built.manifest.data["splits"]) == (built.dataset not in EVAL_ELSEWHERE)
    if built.eval_shards is not None:
        evaluated = Manifest.load(built.eval_shards)
        assert evaluated.image_size == size and evaluated.num_categories == built.manifest.num_categories
        assert set(evaluated.data["splits"]) == {"val", "test"}


def test_teacher_recipe_passes_the_checks_before_ray(built):
    seen = reaches_ray(command_argv("teacher", recipe(built.dataset, "teacher"), built, None))
    r = seen["recipe"]
    assert (r.kind, r.folds, r.data.shards, r.eval.split) == ("teacher", 3, str(built.shards.resolve()), "val")
    assert r.eval.shards == (str(built.eval_shards.resolve()) if built.eval_shards else "")
    assert r.scaling.use_gpu and r.scaling.num_workers >= 2 and r.model.backbone == "resnet50"
    assert seen["manifest"].hash == built.manifest.hash
    assert len(seen["folds"].plan.excluded) == 3, "the fold teachers are planned before Ray starts"


def test_student_recipe_passes_the_checks_before_ray(built):
    seen = reaches_ray(command_argv("student", recipe(built.dataset, "student"), built, built.teacher))
    r = seen["recipe"]
    assert (r.kind, r.kd.mode, r.kd.ranks, r.teacher) == ("student", "weighted", "out_of_fold", str(built.teacher))
    assert r.model.pretrained and r.scaling.use_gpu
    assert r.eval_shards == str((built.eval_shards or built.shards).resolve())
    from structvpr.platform.ranking.folds import training_views

    assert len(seen["inputs"]["teacher_ranks"]) == len(training_views(built.manifest))  # out-of-fold r_T for every view


def test_tune_recipe_passes_the_checks_before_ray(built):
    seen = reaches_ray(command_argv("tune", recipe(built.dataset, "tune"), built, built.teacher, "--register-best"))
    sweep = seen["sweep"]
    assert sweep.recipe.kd.mode == "weighted" and sweep.recipe.kd.ranks == "out_of_fold"
    assert sweep.recipe.eval_shards == str((built.eval_shards or built.shards).resolve())
    assert sweep.tune.scheduler.name == "asha" and sweep.tune.num_samples >= 16
    assert {"kd.weighting.noisy_rank", "kd.weighting.good_rank", "kd.lam"} <= set(sweep.space)
    assert len(sweep.tune.points_to_evaluate) == 1 and "teacher_ranks" in seen["inputs"]


def mutated(path: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    copy = tmp_path / f"{len(list(tmp_path.iterdir()))}-{path.name}"
    copy.write_text(text.replace(old, new, 1))
    return copy


def test_the_same_checks_refuse_a_broken_recipe(built, tmp_path, capsys):
    """What the tests above would catch in a recipe file: a wrong key, a split the shards lack, more folds than
    blocks, a teacher trained at another size than the shards, a sweep key that is not a recipe key, and (GSV)
    the recipe's own placeholder eval.shards left unreplaced."""
    teacher_yaml, student_yaml, tune_yaml = (recipe(built.dataset, k) for k in KINDS)
    teacher, other_size = built.teacher, built.other_size
    cases = [
        (command_argv("teacher", mutated(teacher_yaml, tmp_path, "  views_per_place:", "  view_per_place:"),
                      built, None), "unknown key(s) data.view_per_place"),
        (command_argv("student", mutated(student_yaml, tmp_path, "  split: val", "  split: train"), built, teacher),
         "the train set in"),  # train shards hold places, never a database and queries
        (command_argv("tune", mutated(tune_yaml, tmp_path, "kd.lam: {", "kd.lamda: {"), built, teacher),
         "kd.lamda"),
        (command_argv("teacher", mutated(teacher_yaml, tmp_path, "folds: 3", f"folds: {PLACES + 1}"), built, None),
         f"folds={PLACES + 1} but the training places fill only {PLACES} spatial block(s)"),
        (command_argv("student", student_yaml, built, other_size), "the teacher was trained at"),
        (command_argv("tune", tune_yaml, built, other_size), "the teacher was trained at"),
    ]
    if built.eval_shards is not None:
        placeholder = load_mapping(teacher_yaml)["eval"]["shards"]
        unreplaced = [a for a in command_argv("teacher", teacher_yaml, built, None) if not a.startswith("eval.shards=")]
        cases.append((unreplaced, f"eval.shards {placeholder}: no manifest.json"))
    for argv, message in cases:
        assert message in refused(argv, capsys), argv


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_models_build_at_the_shards_size(built, kind):
    """What each Ray Train worker builds first: the recipe's branch at the shards' image size (no download).

    Built on the meta device: every layer and the probe of the feature map's size run as on the GPU (shapes,
    the aggregator's map size, dim), without computing a ResNet-50 at 640x480 on the CPU."""
    import torch

    from structvpr.platform.jobs.single_job import load_recipe
    from structvpr.platform.jobs.train_loop import build_job, build_model

    dataset, shards, manifest, teacher = built.dataset, built.shards, built.manifest, built.teacher
    overrides = [f"data.shards={shards}", "model.pretrained=false", *([f"teacher={teacher}"] if kind == "student" else [])]
    r = load_recipe(kind, str(recipe(dataset, kind)), overrides)
    job = build_job(r, 0, 1, torch.device("cpu"))  # loads the student's teacher, on the CPU
    with torch.device("meta"):
        model, _, _ = build_model(job, prepare=lambda m: m)
        width, height = manifest.image_size
        batch = torch.zeros(2, model.spec["in_chans"], height, width)
        descriptors = model(batch)
    assert model.spec["image_hw"] == (height, width) and model.spec["backbone"] == r.model.backbone
    assert tuple(descriptors.shape) == (2, r.model.dim)
    assert model.input_kind == ("seg" if kind == "teacher" else "rgb")


DOC = REPO / "docs" / "RECIPES.md"


def doc_commands() -> list[list[str]]:
    """Every `structvpr ...` command in docs/RECIPES.md's code blocks (after `ray job submit ... --` too)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("ray job submit"):
            line = line.split(" -- ", 1)[1]
        if line.startswith("structvpr "):
            commands.append(shlex.split(line)[1:])
    return commands


def test_docs_commands_are_what_the_cli_accepts():
    from structvpr.config import from_dict
    from structvpr.platform.recipe import Recipe

    commands = doc_commands()
    used = {c[0] if c[0] != "data" else f"data {c[1]}" for c in commands}
    assert {"data shards", "data verify", "train", "tune", "eval", "registry"} <= used, used
    for argv in commands:
        args, extra = cli.build_parser().parse_known_args(argv)  # as cli.main: overrides may follow options
        assert not extra or (args.command in ("train", "tune") and all("=" in e for e in extra)), argv
        if args.command in ("train", "tune"):
            kind = "student" if args.command == "tune" else args.kind
            assert (REPO / args.config).is_file(), argv
            data = load_mapping(REPO / args.config, [f"kind={kind}", *args.overrides, *extra])
            data.pop("tune", None)
            from_dict(Recipe, data)  # every override is a recipe key of the right type
        if argv[:2] == ["data", "shards"] and args.seg_model != "gt":
            assert HUB_MODEL.match(args.seg_model), argv
