"""GPU check of student training: weighted KD, AMP bf16, channels_last; images/s and peak GPU memory.

    python bench/gpu_student_check.py                          # CUDA: builds its data, ~300 steps, a few minutes
    python bench/gpu_student_check.py --shards DIR             # train shards already built (`structvpr data shards`)
    python bench/gpu_student_check.py --steps 3 --device cpu   # CPU smoke test of the code path (tiny city)

One prepared script for a short, unattended session on a CUDA machine (one H100: well under 8
minutes including building its data). Self-contained: only the project and its installed packages.

1. Data (unless --shards): the synthetic city (`small` preset on CUDA, `tiny` on the CPU) rendered
   at --size (default 320x240) with `generate_city`, and its shards with `build_shards` (ground-truth
   segmentation, a local Ray instance for the build only). Reused when the work folder already has them.
2. Model: the job from `train_loop.build_job`, and the RGB student exactly as the student job builds
   it (`train_loop.build_model`: resnet18 + GeM, channels_last on CUDA, AdamW, LR schedule; Ray Train's
   prepare_model is replaced by a plain move to the device). The teacher, reading the 8 one-hot
   categories, has random weights (speed does not depend on them), saved as a checkpoint in the work
   folder that build_job loads as a job loads its teacher.
3. Gallery: `train_loop.refresh_gallery` (teacher and student descriptors of every training view).
4. Training, with the job's `train_loop.train_epoch` (autocast bf16 when train.amp and CUDA):
   - warm-up steps (cuDNN algorithm search, allocator), not counted;
   - end to end: the job's `training_loader` (decoding jpg + seg.png in --loader-workers processes)
     feeding the GPU: what a training job gets;
   - compute only: the same steps over --cached batches already on the GPU (the loader swapped for
     them): what the GPU can do when the input pipeline keeps up.
Prints the device name, images/s of both, ms/step, and peak GPU memory (torch.cuda.max_memory_allocated
over the training steps); writes the numbers as JSON to --out.

Exit status: 0 done; 2 no CUDA GPU (with a message; nothing is built); 1 a failure.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import common  # noqa: E402  (puts the repo on sys.path)

from structvpr.cli import parse_size

NO_GPU = 2
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda (default) or cpu (smoke test)")
    p.add_argument("--steps", type=int, default=300,
                   help="training steps in all: 10%% warm-up, then 60%% end to end and 30%% compute only (default 300)")
    p.add_argument("--shards", help="train shards to use instead of building them")
    p.add_argument("--size", default="320x240", type=parse_size, help="WxH of the images (default 320x240)")
    p.add_argument("--preset", help="synthetic city preset (default: small on cuda, tiny on cpu)")
    p.add_argument("--places", type=int, help="P: places per batch (default 32 on cuda, 4 on cpu)")
    p.add_argument("--views", type=int, help="K: views per place (default 4 on cuda, 2 on cpu)")
    p.add_argument("--dim", type=int, default=256, help="descriptor size")
    p.add_argument("--loader-workers", type=int, help="DataLoader processes (default min(8, CPUs - 2) on cuda, 0 on cpu)")
    p.add_argument("--cached", type=int, default=8, help="batches kept on the device for the compute-only phase")
    p.add_argument("--no-amp", action="store_true", help="float32 instead of autocast bf16")
    p.add_argument("--no-channels-last", action="store_true", help="contiguous NCHW instead of channels_last")
    p.add_argument("--work", default=str(common.WORK / "gpu-check"),
                   help="folder for the city and shards it builds (reused by later runs)")
    p.add_argument("--out", help="JSON summary file (default WORK/summary-<device>.json)")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    args.preset = args.preset or ("small" if gpu else "tiny")
    args.places = args.places or (32 if gpu else 4)
    args.views = args.views or (4 if gpu else 2)
    if args.loader_workers is None:
        args.loader_workers = max(0, min(8, (os.cpu_count() or 2) - 2)) if gpu else 0
    if args.steps < 3:
        p.error("--steps must be at least 3 (warm-up, end to end, compute only)")
    return args


def check_device(args) -> None:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_student_check: no CUDA GPU present (torch.cuda.is_available() is False; "
              f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Nothing was built or run.\n"
              "Run it on a machine with a CUDA GPU, or check the code path on the CPU with:\n"
              "    python bench/gpu_student_check.py --steps 3 --device cpu", file=sys.stderr, flush=True)
        sys.exit(NO_GPU)


# ---------------------------------------------------------------- data


def build_data(args) -> Path:
    """Train shards: --shards as given, or the synthetic city's, built once into the work folder."""
    if args.shards:
        return Path(args.shards)
    from structvpr.datasets.synth import generate_city

    work = Path(args.work)
    w, h = args.size
    city = work / f"city-{args.preset}-{w}x{h}"
    shards = work / f"shards-{args.preset}-{w}x{h}"
    if (shards / "manifest.json").is_file():
        log(f"shards: reusing {shards}")
        return shards
    cpus = os.cpu_count() or 2
    meta = city / "synth.json"
    if not (meta.is_file() and json.loads(meta.read_text()).get("complete")):
        log(f"rendering the {args.preset} city at {w}x{h} into {city} ({cpus} processes) ...")
        summary = generate_city(city, args.preset, seed=0, image_size=(w, h), workers=max(1, min(cpus, 16)),
                                progress=False)
        log(f"  rendered in {summary['seconds']:.1f} s")
    log(f"building shards into {shards} (build_shards, ground-truth segmentation, local Ray) ...")
    import ray

    from structvpr.datasets.shards.build import BuildOptions, build_shards
    from structvpr.runtime import ensure_ray

    ensure_ray(num_cpus=cpus)
    try:
        build_shards("vg", city, shards, BuildOptions(seg_model="gt", image_size=(w, h), shard_images=500,
                                                      workers=max(1, min(cpus - 1, 12)), use_gpu=False,
                                                      progress=False, overwrite=True))
    finally:
        ray.shutdown()  # training below uses no Ray: free its processes and cores
    log("  shards built")
    return shards


# ---------------------------------------------------------------- training


def make_job(args, shards: Path, device):
    """The weighted-KD student job, as build_job makes it, with a teacher of random weights (common.scratch_teacher)."""
    from structvpr.config import from_dict
    from structvpr.platform.jobs.train_loop import build_job
    from structvpr.platform.recipe import Recipe

    recipe = from_dict(Recipe, {
        "kind": "student", "teacher": "built-from-scratch-in-gpu_student_check",
        "data": {"shards": str(shards), "places_per_batch": args.places, "views_per_place": args.views,
                 "batches_per_epoch": args.steps, "loader_workers": args.loader_workers},
        "model": {"backbone": "resnet18", "aggregator": "gem", "dim": args.dim},
        "train": {"epochs": 1, "seed": 0, "amp": not args.no_amp, "channels_last": not args.no_channels_last},
        "kd": {"mode": "weighted", "loss": "kl"},
    })
    job = build_job(recipe, 0, 1, device, teacher_ref=common.scratch_teacher(recipe, seed=1, folder=Path(args.work)))
    if job.manifest.image_size != tuple(args.size):
        width, height = job.manifest.image_size
        log(f"note: the shards are {width}x{height}, not {args.size[0]}x{args.size[1]}; training at the shards' size")
    return job


def build_student(job):
    """train_loop.build_model outside a Ray Train session: prepare_model becomes a move to the device."""
    import torch

    from structvpr.platform.jobs import train_loop
    from structvpr.platform.losses import MetricLoss

    torch.manual_seed(job.recipe.train.seed)
    model, optimizer, scheduler = train_loop.build_model(job, prepare=lambda model: model.to(job.device))
    return model, optimizer, scheduler, MetricLoss()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch(job, parts, gallery, batches: int, index: int, loader=None) -> dict:
    """train_loop.train_epoch over `batches` steps (from the job's loader, or `loader`); steps, seconds, losses."""
    from structvpr.platform.jobs import train_loop

    model, optimizer, scheduler, metric_loss = parts
    job.recipe.data.batches_per_epoch = batches
    losses, entries = [], []
    real_loss = train_loop.batch_loss

    def counted_loss(*a, **k):
        # Weighted KD reads its group counts (int) every step, a device sync, so entry times mark step
        # boundaries; without weighting, the steady-state figure is the CPU's queueing rate (seconds is exact).
        entries.append(time.perf_counter())
        out = real_loss(*a, **k)
        losses.append(out[0].detach())
        return out

    train_loop.batch_loss = counted_loss
    if loader is None:
        from structvpr.platform.jobs.data import training_loader

        loader = training_loader(job.recipe, 0, 1, start_epoch=index)
    try:
        sync(job.device)
        start = time.perf_counter()
        train_loop.train_epoch(job, model, optimizer, scheduler, metric_loss, gallery, loader)
        sync(job.device)
        seconds = time.perf_counter() - start
    finally:
        train_loop.batch_loss = real_loss
    values = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"non-finite loss in phase {index}: {values}")
    # Steady state: first step's start to the last step's start (steps 1..n-1, without the loader's start-up).
    steady = (entries[-1] - entries[0]) / (len(entries) - 1) if len(entries) > 1 else seconds
    return {"steps": len(values), "seconds": seconds, "steady_step_seconds": steady, "first_loss": values[0],
            "last_loss": values[-1]}


def cached_batches(job, n: int) -> list[dict]:
    """n batches of the job's loader, moved to the device once (uint8, as the loader gives them)."""
    from structvpr.platform.jobs.data import training_loader

    job.recipe.data.batches_per_epoch = n
    out = []
    for batch in itertools.islice(training_loader(job.recipe, 0, 1, start_epoch=10_000), n):
        out.append({k: (v.to(job.device, non_blocking=True) if hasattr(v, "to") and k in ("rgb", "seg") else v)
                    for k, v in batch.items()})
    return out


class Cycle:
    """An iterable of `steps` batches cycling through `batches` (what train_epoch reads instead of the loader)."""

    def __init__(self, batches: list[dict], steps: int):
        self.batches, self.steps = batches, steps

    def __iter__(self):
        return itertools.islice(itertools.cycle(self.batches), self.steps)


def describe_device(args):
    """The torch device and its name; logs what it is (on CUDA: memory, versions, bf16 support)."""
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory
        log(f"device: {name} ({total / 2**30:.1f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        log(f"device: {name}, torch {torch.__version__}, {torch.get_num_threads()} threads (smoke test of the code path)")
    return device, name


def log_student(args, job, model) -> bool:
    """Log the student's set-up; whether its convolution weights are channels_last."""
    import torch

    conv = next(p for p in model.parameters() if p.dim() == 4)
    channels_last = conv.is_contiguous(memory_format=torch.channels_last) and conv.shape[1] > 1
    w, h = job.manifest.image_size
    log(f"student resnet18+GeM dim {args.dim}, weighted KD (teacher from scratch), batch {args.places}x{args.views} "
        f"= {args.places * args.views} images at {w}x{h}; amp bf16: {job.amp}; channels_last weights: {channels_last}; "
        f"loader workers {args.loader_workers}")
    return channels_last


def encode_gallery(job, model):
    """train_loop.refresh_gallery, timed; (gallery, seconds)."""
    from structvpr.platform.jobs.train_loop import refresh_gallery

    start = time.perf_counter()
    gallery = refresh_gallery(job, model)
    sync(job.device)
    seconds = time.perf_counter() - start
    log(f"gallery: {gallery.labels.numel()} training views encoded by teacher and student in {seconds:.1f} s")
    return gallery, seconds


def train_phases(args, job, parts, gallery) -> dict:
    """Warm-up, end to end and compute-only steps; their results, and the peak GPU memory over them."""
    import torch

    device, images_per_step = job.device, args.places * args.views
    warm = max(1, args.steps // 10)
    e2e = max(1, round((args.steps - warm) * 2 / 3))
    compute = max(1, args.steps - warm - e2e)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    res_warm = epoch(job, parts, gallery, warm, 0)
    log(f"warm-up: {res_warm['steps']} steps in {res_warm['seconds']:.1f} s, loss {res_warm['first_loss']:.3f}")
    res_e2e = epoch(job, parts, gallery, e2e, 1)
    log(f"end to end (loader -> device): {res_e2e['steps']} steps in {res_e2e['seconds']:.1f} s")
    batches = cached_batches(job, min(args.cached, compute))
    epoch(job, parts, gallery, min(3, compute), 2, loader=Cycle(batches, min(3, compute)))  # warm the cached path
    res_cmp = epoch(job, parts, gallery, compute, 3, loader=Cycle(batches, compute))
    log(f"compute only (cached batches): {res_cmp['steps']} steps in {res_cmp['seconds']:.1f} s")
    cuda = device.type == "cuda"
    return {"warm": res_warm, "e2e": res_e2e, "compute": res_cmp,
            "e2e_rate": res_e2e["steps"] * images_per_step / res_e2e["seconds"],
            "e2e_steady": images_per_step / res_e2e["steady_step_seconds"],
            "cmp_rate": res_cmp["steps"] * images_per_step / res_cmp["seconds"],
            "peak": torch.cuda.max_memory_allocated(device) if cuda else None,
            "reserved": torch.cuda.max_memory_reserved(device) if cuda else None}


def summarise(args, job, name, channels_last, shards, data_seconds, gallery, gallery_seconds, ph) -> dict:
    """The numbers of the run, as written to the JSON summary."""
    import torch

    res_warm, res_e2e, res_cmp = ph["warm"], ph["e2e"], ph["compute"]
    return {
        "device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "amp_bf16": job.amp,
        "channels_last": channels_last, "image_size": list(job.manifest.image_size),
        "batch": args.places * args.views, "dim": args.dim,
        "loader_workers": args.loader_workers, "shards": str(shards), "data_seconds": data_seconds,
        "gallery_seconds": gallery_seconds, "gallery_views": int(gallery.labels.numel()),
        "steps": {"warm_up": res_warm["steps"], "end_to_end": res_e2e["steps"], "compute_only": res_cmp["steps"]},
        "end_to_end_images_per_s": ph["e2e_rate"], "end_to_end_ms_per_step": 1e3 * res_e2e["seconds"] / res_e2e["steps"],
        "end_to_end_steady_images_per_s": ph["e2e_steady"],
        "compute_images_per_s": ph["cmp_rate"], "compute_ms_per_step": 1e3 * res_cmp["seconds"] / res_cmp["steps"],
        "peak_gpu_memory_allocated_bytes": ph["peak"], "peak_gpu_memory_reserved_bytes": ph["reserved"],
        "loss_first_last": [res_warm["first_loss"], res_cmp["last_loss"]],
        "total_seconds": time.perf_counter() - T0,
    }


def print_summary(args, summary: dict, ph: dict, out: Path) -> None:
    """The results table on stdout."""
    w, h = summary["image_size"]
    res_e2e, res_cmp, peak, reserved = ph["e2e"], ph["compute"], ph["peak"], ph["reserved"]
    print()
    print(f"device:                         {summary['device']}")
    print(f"precision / layout:             {'autocast bf16' if summary['amp_bf16'] else 'float32'}, "
          f"{'channels_last' if summary['channels_last'] else 'NCHW'}")
    print(f"batch:                          {args.places} places x {args.views} views = {summary['batch']} images at {w}x{h}")
    print(f"end to end (loader -> device):  {ph['e2e_rate']:,.1f} images/s  ({summary['end_to_end_ms_per_step']:.1f} ms/step, "
          f"{res_e2e['steps']} steps, {args.loader_workers} loader workers, loader start-up included)")
    print(f"  steady state, after 1st batch: {ph['e2e_steady']:,.1f} images/s  "
          f"({1e3 * res_e2e['steady_step_seconds']:.1f} ms/step)")
    print(f"compute only (cached batches):  {ph['cmp_rate']:,.1f} images/s  ({summary['compute_ms_per_step']:.1f} ms/step, "
          f"{res_cmp['steps']} steps)")
    if peak is not None:
        print(f"peak GPU memory:                {peak / 2**30:.2f} GiB allocated (max_memory_allocated), "
              f"{reserved / 2**30:.2f} GiB reserved")
    else:
        print("peak GPU memory:                n/a (CPU)")
    print(f"loss:                           {ph['warm']['first_loss']:.3f} (first step) -> {res_cmp['last_loss']:.3f} (last)")
    print(f"data build {summary['data_seconds']:.1f} s, gallery {summary['gallery_seconds']:.1f} s, "
          f"total {summary['total_seconds']:.1f} s; summary: {out}")


def main(argv=None) -> int:
    """Check the device, build the data and the job, encode the gallery, train the phases, write and print the summary."""
    args = parse_args(argv)
    check_device(args)
    device, name = describe_device(args)
    data_start = time.perf_counter()
    shards = build_data(args)
    data_seconds = time.perf_counter() - data_start
    job = make_job(args, shards, device)
    parts = build_student(job)
    channels_last = log_student(args, job, parts[0])
    gallery, gallery_seconds = encode_gallery(job, parts[0])
    phases = train_phases(args, job, parts, gallery)
    summary = summarise(args, job, name, channels_last, shards, data_seconds, gallery, gallery_seconds, phases)
    out = Path(args.out or Path(args.work) / f"summary-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print_summary(args, summary, phases, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
