"""Benchmark: a training step inside a Ray Train worker vs the same step in a plain PyTorch loop, side by side.

    .venv/bin/python bench/bench_train_overhead.py            # tiny city, weighted KD, warm-up + 5 rounds of 6 steps
    .venv/bin/python bench/bench_train_overhead.py --quick    # warm-up + 2 rounds of 4 steps

Both sides run the project's own training code on the same real shards (the tiny synthetic city
at 160x120, built once with build_shards): `train_loop.train_epoch` -> `train_loader` (P x K place
batches) -> `train_loop.batch_loss` (student: RGB branch, metric loss, KD from a teacher, weighted by
ranks against the `refresh_gallery` gallery), AdamW + the recipe's LR schedule. Same recipe, same
seeds, so the same initial weights and the same batches; the printed losses of both sides must match.

(a) plain: in this process, the model from `train_loop.build_model` (with ray.train.torch.prepare_model
    as the identity, since there is no Ray Train session here).
(b) ray: a Ray Train TorchTrainer, 1 worker, 1 CPU (the ScalingConfig `build_trainer` makes), whose
    worker runs `train_loop.build_model` (with the real prepare_model) and the same epochs.

torch uses one thread on both sides. Rounds alternate (ray plain, plain ray, ...); the two sides
take turns through files in a sync folder, so they never compute at the same time. Only steps are
timed: the step time is the interval between successive `batch_loss` calls (loss, backward, optimizer,
scheduler, and fetching the next batch); gallery refresh and loader start-up are outside. Round 0 of
each side is a warm-up, not counted. Target: Ray's median step time at most 5% above the plain loop's.

Also printed: the fixed start-up cost of a Ray Train job, seconds from fit() to the first step in the
worker (and from ray.init), next to the plain loop's set-up to first step in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import common  # noqa: E402  (puts the repo on sys.path)

import torch

from structvpr.config import from_dict
from structvpr.platform.recipe import Recipe

TARGET_OVERHEAD = 0.05
TEACHER_SEED = 12345


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 4 steps")
    p.add_argument("--rounds", type=int, help="timed rounds after the warm-up round (default 5, quick 2)")
    p.add_argument("--steps", type=int, help="steps (batches) per round (default 6, quick 4)")
    p.add_argument("--city", default="tiny", choices=["tiny", "small"], help="synthetic city of the shards")
    p.add_argument("--size", default="160x120", help="WxH of the shards")
    p.add_argument("--kd", default="weighted", choices=["weighted", "plain", "none"], help="student kd.mode")
    p.add_argument("--places", type=int, default=8, help="P: places per batch")
    p.add_argument("--views", type=int, default=4, help="K: views per place")
    p.add_argument("--dim", type=int, default=128, help="descriptor size (configs/tiny: 128)")
    return p.parse_args(argv)


# ---------------------------------------------------------------- shared by both sides (pickled by value to the worker)


def make_job(config: dict, device):
    """A train_loop.Job for rank 0 of 1, with a teacher built from a fixed seed (no checkpoint to load)."""
    from structvpr.datasets.shards.manifest import load_manifest
    from structvpr.platform.jobs.train_loop import Job
    from structvpr.platform.models import create_branch

    recipe = from_dict(Recipe, config["recipe"])
    manifest = load_manifest(recipe.data.shards)
    job = Job(recipe, 0, 1, device, manifest, run_id="", tracking_uri="")
    if recipe.kind == "student" and recipe.kd.mode != "none":
        width, height = manifest["image_size"]
        categories = len(manifest["segmentation"]["class_map"]["categories"])
        torch.manual_seed(TEACHER_SEED)
        job.teacher = create_branch(recipe.model.backbone, categories, recipe.model.aggregator, recipe.model.dim,
                                    image_hw=(height, width), num_classes=categories).to(device).eval()
        job.teacher.requires_grad_(False)
    return job


def build(job):
    """train_loop.build_model under the recipe's seed: the same initial weights on both sides."""
    from structvpr.platform.jobs import train_loop
    from structvpr.platform.losses import MetricLoss

    torch.manual_seed(job.recipe.train.seed)
    model, optimizer, scheduler = train_loop.build_model(job)
    return model, optimizer, scheduler, MetricLoss(distributed=job.world_size > 1)


def run_epoch(job, parts, epoch: int) -> dict:
    """One epoch as train_loop_per_worker runs it (seed, gallery, train_epoch), with each batch_loss call timed."""
    from structvpr.platform.jobs import train_loop

    model, optimizer, scheduler, metric_loss = parts
    torch.manual_seed(job.recipe.train.seed * 7919 + epoch * 101 + job.rank)
    start_wall, started = time.time(), time.perf_counter()
    weighted = job.is_student and job.recipe.kd.mode == "weighted"
    gallery = train_loop.refresh_gallery(job, model) if weighted else None
    gallery_s = time.perf_counter() - started
    entries, walls, losses = [], [], []
    real = train_loop.batch_loss

    def timed_batch_loss(*args, **kwargs):
        entries.append(time.perf_counter())
        walls.append(time.time())
        out = real(*args, **kwargs)
        losses.append(float(out[0].detach()))
        return out

    train_loop.batch_loss = timed_batch_loss  # train_epoch looks the name up at each call
    try:
        epoch_start = time.perf_counter()
        train_loop.train_epoch(job, model, optimizer, scheduler, metric_loss, gallery, epoch)
        end = time.perf_counter()
    finally:
        train_loop.batch_loss = real
    steps = [b - a for a, b in zip(entries, entries[1:] + [end])]
    return {"epoch": epoch, "steps": steps, "losses": losses, "start_wall": start_wall, "end_wall": time.time(),
            "first_step_wall": walls[0] if walls else None,
            "epoch_seconds": end - epoch_start, "gallery_seconds": gallery_s, "threads": torch.get_num_threads(),
            "pid": os.getpid()}


def wait_for(path: Path, timeout: float, alive=lambda: True) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout:.0f} s")
        if not alive():
            raise RuntimeError(f"the other side stopped before writing {path.name}")
        time.sleep(0.02)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # the reader never sees half a file


def ray_worker(config: dict) -> None:
    """The Ray Train worker: round 0 at once (start-up is measured to its first step), then on each go-r file."""
    import ray.train.torch

    t_enter = time.time()
    torch.set_num_threads(1)
    sync = Path(config["sync"])
    job = make_job(config, ray.train.torch.get_device())
    parts = build(job)
    t_built = time.time()
    for r in range(config["rounds"] + 1):
        if r:
            wait_for(sync / f"go-{r}", timeout=1800)
        result = run_epoch(job, parts, r)
        result.update(t_enter=t_enter, t_built=t_built,
                      omp=os.environ.get("OMP_NUM_THREADS"), device=str(job.device))
        write_json(sync / f"done-{r}.json", result)


# ---------------------------------------------------------------- driver


def make_recipe(shard_dir: Path, args, steps: int, rounds: int) -> Recipe:
    return from_dict(Recipe, {
        "kind": "student", "teacher": "built-from-scratch-in-the-benchmark",
        "data": {"shards": str(shard_dir), "places_per_batch": args.places, "views_per_place": args.views,
                 "batches_per_epoch": steps, "loader_workers": 0},
        "model": {"backbone": "resnet18", "aggregator": "gem", "dim": args.dim},
        "train": {"epochs": rounds + 1, "seed": 0, "lr": 1e-3},
        "kd": {"mode": args.kd},
        "scaling": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
        "run": {"storage_path": str(common.WORK / "overhead-runs")},
    })


def start_trainer(recipe: Recipe, config: dict, name: str):
    """A TorchTrainer with the ScalingConfig build_trainer makes from the recipe, running ray_worker."""
    import ray.train
    from ray.train.torch import TorchTrainer

    s = recipe.scaling
    return TorchTrainer(
        ray_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker={"CPU": s.cpus_per_worker},
                                               placement_strategy=s.placement_strategy),
        run_config=ray.train.RunConfig(name=name, storage_path=recipe.run.storage_path,
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )


def main(argv=None):
    args = parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    steps = args.steps or (4 if args.quick else 6)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    print(common.machine_line())
    common.quiet_ray_logs()
    common.limit_threads(1)
    city = common.city("tiny", (320, 240)) if args.city == "tiny" else common.city("small")
    shard_dir = common.shards(city, size)
    recipe = make_recipe(shard_dir, args, steps, rounds)
    sync = common.WORK / f"overhead-sync-{os.getpid()}"
    shutil.rmtree(sync, ignore_errors=True)
    sync.mkdir(parents=True)
    config = {"recipe": asdict(recipe), "sync": str(sync), "rounds": rounds}
    print(f"shards: {shard_dir.name}; student resnet18+GeM dim {args.dim}, kd.mode={args.kd}, "
          f"batch {args.places}x{args.views} = {args.places * args.views} images at {size[0]}x{size[1]}; "
          f"warm-up + {rounds} rounds of {steps} steps per side; torch threads {torch.get_num_threads()}")

    # (a) the plain side's set-up, timed the same way as the worker's (job, model, first epoch's first step).
    t_plain0 = time.time()
    job = make_job(config, torch.device("cpu"))
    with mock.patch("ray.train.torch.prepare_model", lambda model: model):
        plain = build(job)
    t_plain_built = time.time()

    # (b) Ray: init, then fit() in a thread; the worker runs its warm-up round at once.
    from structvpr.runtime import ensure_ray

    t_init0 = time.time()
    ensure_ray()
    t_init1 = time.time()
    trainer = start_trainer(recipe, config, f"overhead-{os.getpid()}")
    fit_error, fit_times = [], {}

    def fit():
        fit_times["start"] = time.time()
        try:
            trainer.fit()
        except BaseException as exc:  # surfaced in the main thread
            fit_error.append(exc)
        fit_times["end"] = time.time()

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    alive = lambda: thread.is_alive() or not fit_error  # noqa: E731

    def ray_round(r: int) -> dict:
        if r:
            (sync / f"go-{r}").touch()
        try:
            wait_for(sync / f"done-{r}.json", timeout=1800, alive=alive)
        except Exception:
            if fit_error:
                raise fit_error[0]
            raise
        return json.loads((sync / f"done-{r}.json").read_text())

    results = {"ray": [], "plain": []}
    print("warm-up round (ray first: its start-up is timed)...", flush=True)
    results["ray"].append(ray_round(0))
    results["plain"].append(run_epoch(job, plain, 0))
    for r in range(1, rounds + 1):
        order = ["ray", "plain"] if r % 2 else ["plain", "ray"]
        for side in order:
            results[side].append(ray_round(r) if side == "ray" else run_epoch(job, plain, r))
        a, b = (statistics.median(results[s][-1]["steps"]) for s in ("plain", "ray"))
        print(f"  round {r}/{rounds} ({' '.join(order)}): plain {a * 1e3:,.0f} ms/step  ray {b * 1e3:,.0f} ms/step  "
              f"ray/plain {b / a:.3f}", flush=True)
    thread.join(timeout=600)
    if fit_error:
        raise fit_error[0]
    shutil.rmtree(sync, ignore_errors=True)

    # ---------------------------------------------------------------- report
    timed = {s: results[s][1:] for s in results}
    med = {s: statistics.median([t for res in timed[s] for t in res["steps"]]) for s in timed}
    per_round = [statistics.median(rr["steps"]) / statistics.median(pp["steps"])
                 for rr, pp in zip(timed["ray"], timed["plain"])]
    overhead = statistics.median(per_round) - 1.0
    epoch_med = {s: statistics.median(res["epoch_seconds"] for res in timed[s]) for s in timed}
    diffs = [abs(x - y) for rr, pp in zip(results["ray"], results["plain"]) for x, y in zip(rr["losses"], pp["losses"])]
    worker = results["ray"][0]
    print(f"\nsame losses on both sides, every step of every round: max |difference| = {max(diffs):.2e} "
          f"over {len(diffs)} steps ({'yes' if max(diffs) < 1e-4 else 'NO: the sides did not train alike'})")
    print(f"worker: pid {worker['pid']}, device {worker['device']}, torch threads {worker['threads']}, "
          f"OMP_NUM_THREADS={worker['omp']}; plain: pid {os.getpid()}, torch threads {results['plain'][0]['threads']}")
    n_steps = sum(len(res["steps"]) for res in timed["plain"])
    common.print_table(
        ["side", "median step (ms)", "min..max (ms)", "median epoch of steps (s)", "steps timed"],
        [[name, f"{med[s] * 1e3:,.1f}", common.spread(t * 1e3 for res in timed[s] for t in res["steps"]),
          f"{epoch_med[s]:.2f}", n_steps]
         for s, name in (("plain", "(a) plain PyTorch loop, in-process"), ("ray", "(b) Ray Train worker, 1 CPU"))],
        title="training step (train_epoch -> batch_loss, backward, AdamW, schedule, next batch)")
    print(f"per-round ratio ray/plain (median step times): {' '.join(f'{x:.3f}' for x in per_round)}")

    first = worker["first_step_wall"]
    plain_first = results["plain"][0]["first_step_wall"]
    common.print_table(
        ["start-up", "seconds"],
        [["ray.init (local, new instance)", f"{t_init1 - t_init0:.1f}"],
         ["fit() -> worker function entered", f"{worker['t_enter'] - fit_times['start']:.1f}"],
         ["worker: job + model built", f"{worker['t_built'] - worker['t_enter']:.1f}"],
         ["worker: model built -> first step (gallery, loader)", f"{first - worker['t_built']:.1f}"],
         ["fit() -> first step in the worker", f"{first - fit_times['start']:.1f}"],
         ["ray.init + fit() -> first step", f"{first - t_init0:.1f}"],
         ["plain: set-up -> first step (job, model, gallery, loader)",
          f"{(t_plain_built - t_plain0) + (plain_first - results['plain'][0]['start_wall']):.1f}"],
         ["ray: last step done -> fit() returned (teardown)", f"{fit_times['end'] - results['ray'][-1]['end_wall']:.1f}"]],
        title="fixed start-up of a Ray Train job (wall clock; the plain loop's set-up for comparison)")
    print()
    print(f"Ray Train step overhead: {overhead * 100:+.1f}% (median of per-round ratios; target <= "
          f"{TARGET_OVERHEAD * 100:g}%) -> {'MET' if overhead <= TARGET_OVERHEAD else 'NOT MET'}")
    print(f"fixed start-up, fit() -> first step: {first - fit_times['start']:.1f} s "
          f"(plus {t_init1 - t_init0:.1f} s of ray.init when no Ray is running)")
    return {"overhead": overhead, "median_step": med, "startup": first - fit_times["start"]}


if __name__ == "__main__":
    main()
