"""Building shards from a dataset: read, plan, build the missing shards on Ray Data, write the manifest.

Each shard is one unit of work for an actor that holds the segmentation model
(img2dataset's "one shard end to end"): the model loads once per actor, a GPU
serves whole batches, and a shard is either finished or absent.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from structvpr.datasets.formats import read_split, splits_present
from structvpr.datasets.places import PlaceOptions
from structvpr.datasets.records import SPLITS, DatasetError, Listing, file_in_the_way
from structvpr.datasets.shards.manifest import MANIFEST, SIZES, SKIPPED, assemble_manifest, write_text_atomic
from structvpr.datasets.shards.plan import SHARD_KINDS, PlanOptions, ShardSpec, plan_fingerprint, plan_shards
from structvpr.datasets.shards.shard_writer import STATS_SUFFIX, ShardWriter, is_finished, stats_path

PLAN_FILE = "plan.json"
GROUND_TRUTH = "gt"
# What a build writes, by folder (--overwrite removes these and nothing else): manifest.py, shard_writer.py and
# plan.py name them; each is first written under its temporary name, `.<name>.<pid>.tmp`.
TOP_FILES = re.compile("|".join(re.escape(n) for n in (PLAN_FILE, MANIFEST, SKIPPED)))
SPLIT_FILES = re.compile(rf"{re.escape(SIZES)}|(?:{'|'.join(SHARD_KINDS)})-\d{{6}}\.tar(?:{re.escape(STATS_SUFFIX)})?")
TEMPORARY = re.compile(r"\.(.+)\.\d+\.tmp")


@dataclass
class BuildOptions:
    """What `structvpr data shards` takes besides the dataset and output folders."""

    seg_model: str = "gt"  # gt | path to a checkpoint | hub:<id>
    image_size: tuple[int, int] = (320, 240)  # (W, H); images are resized once, here
    images_per_place: int = 4
    shard_images: int = 1000
    splits: tuple[str, ...] | None = None  # None: every split the dataset has
    workers: int = 2
    use_gpu: bool | None = None  # None: when CUDA is present and a model is used
    overwrite: bool = False
    progress: bool = True
    place_radius_m: float = 10.0  # formats without place ids: a query joins a database image this close

    def __post_init__(self):
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            size = "x".join(str(v) for v in self.image_size)
            raise DatasetError(f"--size must be WxH with both at least 8 pixels, got {size}")
        for flag, value in (("--images-per-place", self.images_per_place), ("--shard-images", self.shard_images),
                            ("--workers", self.workers)):
            if value < 1:
                raise DatasetError(f"{flag} must be at least 1, got {value}")
        if not 0 < self.place_radius_m < math.inf:
            raise DatasetError(f"--place-radius must be a positive number of metres, got {self.place_radius_m}")


def build_shards(fmt: str, root: str | Path, out: str | Path, opts: BuildOptions) -> dict:
    """Build (or finish building) the shards of a dataset; returns the manifest."""
    root, out = Path(root).resolve(), Path(out).resolve()
    check_output_location(out, root, opts.seg_model)
    listings = read_listings(fmt, root, opts.splits)
    plan_opts = PlanOptions(opts.images_per_place, shard_images=opts.shard_images,
                            places=PlaceOptions(radius_m=opts.place_radius_m))
    shards, skipped = plan_shards(listings, plan_opts)
    if not shards:
        raise DatasetError(f"nothing to write from {root}: every input was skipped ({len(skipped)} skips)")
    settings = build_settings(fmt, root, opts)
    prepare_output(out, plan_fingerprint(shards, settings), opts.overwrite)
    pending = [s for s in shards if not is_finished(out / s.path)]
    if pending:
        run_shard_actors(pending, out, opts, done=len(shards) - len(pending))
    stats = [json.loads(stats_path(out / s.path).read_text()) for s in shards]
    for shard, stat in zip(shards, stats):
        stat.update(split=shard.split, kind=shard.kind)
    all_skipped = [s.to_dict() for s in skipped] + [k for stat in stats for k in stat.get("skipped", [])]
    return assemble_manifest(out, settings, stats, all_skipped)


def read_listings(fmt: str, root: Path, splits: tuple[str, ...] | None) -> dict[str, Listing]:
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder; check --root")
    wanted = splits or tuple(splits_present(fmt, root))
    if not wanted:
        raise DatasetError(f"no splits found under {root} for format {fmt}; check --root and --format")
    return {split: read_split(fmt, root, split) for split in wanted}


def build_settings(fmt: str, root: Path, opts: BuildOptions) -> dict:
    from structvpr.datasets.class_maps import load_class_map

    return {
        "source": {"format": fmt, "root": str(root)},
        "segmentation": {"model_id": seg_model_id(opts.seg_model), "class_map": load_class_map("categories").to_dict()},
        "image_size": list(opts.image_size),
        "images_per_place": opts.images_per_place,
        "shard_images": opts.shard_images,
        "places": {"radius_m": opts.place_radius_m},
    }


def seg_model_id(spec: str) -> str:
    """The predictor's own id (a checkpoint is named by its content); loading it here fails fast on a bad spec."""
    if spec == GROUND_TRUTH:
        return GROUND_TRUTH
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor

    return SegmentationPredictor(spec, device="cpu").model_id


def check_output_location(out: Path, root: Path, seg_model: str) -> None:
    """--out must not be, hold or lie inside what the build reads: a build would mix into it, --overwrite empty it.

    Paths are compared resolved, so a symlink to the dataset is the dataset. Checked before anything is written.
    """
    guarded = [("the dataset root (--root)", root)]
    model = Path(seg_model).expanduser()
    if seg_model != GROUND_TRUTH and not seg_model.startswith("hub:") and model.exists():
        guarded.append(("the segmentation model (--seg-model)", model.resolve()))
    for what, path in guarded:
        relation = ("is" if out == path else "lies inside" if path in out.parents
                    else "contains" if out in path.parents else None)
        if relation:
            raise DatasetError(f"--out {out} {relation} {what} {path}; choose an --out outside it "
                               "(nothing was written or removed)")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise DatasetError(f"cannot write shards to --out {out}: {blocker} is a file, not a folder; choose a folder")


def prepare_output(out: Path, fingerprint: str, overwrite: bool) -> None:
    """Resume only into a folder built from the same plan; refuse to mix two builds or to touch a user's folder."""
    previous = read_plan(out / PLAN_FILE)
    if previous is None and out.is_dir() and any(out.iterdir()):
        why = (f"--overwrite removes only what a build wrote, and {out} holds no {PLAN_FILE} of one"
               if overwrite else f"it is not empty and holds no {PLAN_FILE} of a build")
        raise DatasetError(f"{out} is not a `structvpr data shards` build: {why}; choose an empty --out")
    if previous is not None and previous != fingerprint and not overwrite:
        raise DatasetError(
            f"{out} holds shards of a different build (other inputs or options); "
            "pass --overwrite to replace them or choose another --out"
        )
    if previous is not None:
        remove_build_files(out, temporaries_only=not overwrite)  # a killed run's half-written files, or all
        if not overwrite:
            return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / PLAN_FILE, json.dumps({"fingerprint": fingerprint, "created": time.time(),
                                                   "written_by": "structvpr data shards"}))


def read_plan(plan_file: Path) -> str | None:
    """The fingerprint in a plan file of ours; None when there is none (or the file is not one of ours)."""
    try:
        plan = json.loads(plan_file.read_text())
    except (OSError, ValueError):
        return None
    fingerprint = plan.get("fingerprint") if isinstance(plan, dict) else None
    return fingerprint if isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{64}", fingerprint) else None


def remove_build_files(out: Path, temporaries_only: bool = False) -> None:
    """Remove what a build writes (or only its half-written temporaries), then the split folders left empty.

    Nothing else: a user's file in --out, or in its split folders, stays where it is.
    """
    for folder, names in ((out, TOP_FILES), *((out / split, SPLIT_FILES) for split in SPLITS)):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            match = TEMPORARY.fullmatch(path.name)
            ours = names.fullmatch(match.group(1) if match else path.name)
            if ours and (match or not temporaries_only) and path.is_file() and not path.is_symlink():
                path.unlink()
        if folder != out and not temporaries_only and not any(folder.iterdir()):
            folder.rmdir()


class ShardBuildActor:
    """A Ray Data actor: loads the segmentation model once, then builds whole shards."""

    def __init__(self, out_dir: str, seg_model: str, image_size: tuple[int, int], device: str | None):
        import torch

        torch.set_num_threads(1)  # one actor per CPU: more threads would only fight each other
        predictor = None
        if seg_model != "gt":
            from structvpr.datasets.segmentation.predictor import SegmentationPredictor

            predictor = SegmentationPredictor(seg_model, device=device)
        self.writer = ShardWriter(out_dir, image_size, predictor)

    def __call__(self, batch: dict) -> dict:
        stats = [self.writer.write(ShardSpec.from_json(str(spec))) for spec in batch["spec"]]
        return {"stats": [json.dumps(s.to_dict()) for s in stats]}


def run_shard_actors(pending: list[ShardSpec], out: Path, opts: BuildOptions, done: int) -> None:
    from tqdm import tqdm

    from structvpr.runtime import cuda_available, ensure_ray

    ensure_ray()  # first: a local instance must be started before anything imports Ray (runtime.py)
    import ray

    use_gpu = opts.use_gpu if opts.use_gpu is not None else (opts.seg_model != "gt" and cuda_available())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar, in images, instead of Ray's per-operator bars
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [{"spec": s.to_json()} for s in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardBuildActor,
        fn_constructor_kwargs={"out_dir": str(out), "seg_model": opts.seg_model,
                               "image_size": tuple(opts.image_size), "device": "cuda" if use_gpu else "cpu"},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=max(1, min(opts.workers, len(pending)))),
        num_cpus=1, num_gpus=1 if use_gpu else 0,
    )
    total = sum(s.num_images for s in pending)
    desc = f"shards ({done} already built)" if done else "shards"
    with tqdm(total=total, unit="img", desc=desc, disable=not opts.progress) as bar:
        for row in ds.iter_rows():
            stat = json.loads(row["stats"])
            bar.update(stat["images"] + len(stat["skipped"]))
            bar.set_postfix_str(stat["path"])
