"""Building shards from a dataset: read, plan, build the missing shards on Ray Data, write the manifest.

Each shard is one unit of work for an actor that holds the segmentation model
(img2dataset's "one shard end to end"): the model loads once per actor, a GPU
serves whole batches, and a shard is either finished or absent.
"""

from __future__ import annotations

import logging
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from structvpr.datasets.formats import get_format, read_split
from structvpr.datasets.places import PlaceOptions
from structvpr.datasets.records import DatasetError, Listing
from structvpr.datasets.shards.manifest import assemble_manifest
from structvpr.datasets.shards.plan import PlanOptions, ShardSpec, plan_fingerprint, plan_shards
from structvpr.datasets.shards.shard_writer import ShardWriter, is_finished, stats_path

PLAN_FILE = "plan.json"


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
            raise DatasetError(f"--size must be WxH with both at least 8 pixels, got {self.image_size}")
        if self.images_per_place < 1:
            raise DatasetError(f"--images-per-place must be at least 1, got {self.images_per_place}")
        if self.shard_images < 1:
            raise DatasetError(f"--shard-images must be at least 1, got {self.shard_images}")


def build_shards(fmt: str, root: str | Path, out: str | Path, opts: BuildOptions) -> dict:
    """Build (or finish building) the shards of a dataset; returns the manifest."""
    root, out = Path(root).resolve(), Path(out).resolve()
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
    wanted = splits or tuple(get_format(fmt).splits(root))
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
    if spec == "gt":
        return "gt"
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor

    return SegmentationPredictor(spec, device="cpu").model_id


def prepare_output(out: Path, fingerprint: str, overwrite: bool) -> None:
    """Resume only into a folder built from the same plan; refuse to mix two different builds."""
    plan_file = out / PLAN_FILE
    if overwrite and out.exists():
        shutil.rmtree(out)
    if plan_file.is_file():
        previous = json.loads(plan_file.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise DatasetError(
                f"{out} holds shards of a different build (other inputs or options); "
                "pass --overwrite to replace them or choose another --out"
            )
        for stale in out.rglob(".*.tmp"):  # half-written shards of a killed run: never finished, never read
            stale.unlink()
        return
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty and holds no {PLAN_FILE}; choose an empty --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps({"fingerprint": fingerprint, "created": time.time()}))


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
    import ray
    from tqdm import tqdm

    from structvpr.runtime import cuda_available, ensure_ray

    ensure_ray()
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
