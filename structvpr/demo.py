"""`structvpr demo`: the main job end to end on the synthetic city, each finished step kept for a rerun."""

from __future__ import annotations

import json
import time
from pathlib import Path

# Small enough for a 2-core laptop in a few minutes, large enough that the models learn something.
DEMO_SEG = {"epochs": 4, "image_size": (160, 120), "batch_size": 16}
TINY_SEG = {"epochs": 1, "image_size": (80, 60), "batch_size": 16}  # the tiny preset is for tests
DEMO_SHARDS = {"image_size": (160, 120), "images_per_place": 4, "shard_images": 500}


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(workdir: str | Path, preset: str = "small", seed: int = 0, progress: bool = True) -> int:
    from structvpr.datasets.segmentation.train import train_segmentation
    from structvpr.datasets.shards.build import BuildOptions, build_shards
    from structvpr.datasets.shards.verify import verify_shards
    from structvpr.datasets.synth import generate_city

    work = Path(workdir).resolve()
    city, ckpt, shards = work / "city", work / "seg.ckpt", work / "shards"
    t = step(f"1/4 synthetic city ({preset}) -> {city}")
    if (city / "synth.json").is_file():
        print("already rendered; kept")
    else:
        generate_city(city, preset=preset, seed=seed, progress=progress)
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"2/4 segmentation model (smp, from scratch) -> {ckpt}")
    if ckpt.is_file():
        print("already trained; kept")
    else:
        settings = TINY_SEG if preset == "tiny" else DEMO_SEG
        metrics = train_segmentation(city, ckpt, seed=seed, progress=progress, **settings)
        print(json.dumps(metrics, indent=1))
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"3/4 WebDataset shards with predicted segmentation -> {shards}")
    opts = BuildOptions(seg_model=str(ckpt), progress=progress, **DEMO_SHARDS)
    manifest = build_shards("vg", city, shards, opts)
    from structvpr.cli import print_build_summary

    print_build_summary(manifest, str(shards))
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"4/4 verify {shards}")
    report = verify_shards(shards, progress=progress)
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, {report.images} images")
    for problem in report.problems:
        print(f"FAIL {problem}")
    print(f"   {time.perf_counter() - t:.0f} s")
    print(f"\nThe shards in {shards} feed `structvpr train teacher/student` (see README).")
    return 0 if report.ok else 1
