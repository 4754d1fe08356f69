"""`structvpr demo`: the main job end to end on the synthetic city, each finished step kept for a rerun."""

from __future__ import annotations

import json
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"  # the recipes shipped beside the package

# Segmentation: `seg train`'s defaults (SegTrainConfig) with fewer epochs, so that a 2-core laptop is done in
# minutes and the model still learns something; the tiny preset is for tests.
DEMO_SEG = {"epochs": 4}
TINY_SEG = {"epochs": 1, "image_size": (80, 60)}
TINY_TRAIN = ["model.backbone=test_resnet", "model.dim=32", "data.places_per_batch=4", "data.views_per_place=2",
              "data.batches_per_epoch=2", "train.epochs=1"]
DEMO_SHARDS = {"image_size": (160, 120), "images_per_place": 4, "shard_images": 500}


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(workdir: str | Path, preset: str = "small", seed: int = 0, progress: bool = True) -> int:
    from structvpr.datasets.segmentation.train import train_segmentation
    from structvpr.datasets.shards.build import BuildOptions, build_shards
    from structvpr.datasets.shards.manifest import print_build_summary
    from structvpr.datasets.shards.verify import verify_shards
    from structvpr.datasets.synth import generate_city

    work = Path(workdir).resolve()
    city, ckpt, shards = work / "city", work / "seg.ckpt", work / "shards"
    t = step(f"1/7 synthetic city ({preset}) -> {city}")
    if (city / "synth.json").is_file():
        print("already rendered; kept")
    else:
        generate_city(city, preset=preset, seed=seed, progress=progress)
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"2/7 segmentation model (smp, from scratch) -> {ckpt}")
    if ckpt.is_file():
        print("already trained; kept")
    else:
        settings = TINY_SEG if preset == "tiny" else DEMO_SEG
        metrics = train_segmentation(city, ckpt, seed=seed, progress=progress, **settings)
        print(json.dumps(metrics, indent=1))
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"3/7 WebDataset shards with predicted segmentation -> {shards}")
    opts = BuildOptions(seg_model=str(ckpt), progress=progress, **DEMO_SHARDS)
    manifest = build_shards("vg", city, shards, opts)
    print_build_summary(manifest, str(shards))
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(f"4/7 verify {shards}")
    report = verify_shards(shards, progress=progress)
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, {report.images} images")
    for problem in report.problems:
        print(f"FAIL {problem}")
    print(f"   {time.perf_counter() - t:.0f} s")
    if not report.ok:
        return 1
    return train_and_evaluate(work, shards, preset)


def train_and_evaluate(work: Path, shards: Path, preset: str) -> int:
    """Teacher, then the weighted-KD student distilled from it, then the student on the test split."""
    from structvpr.platform.evaluation.command import run_eval
    from structvpr.platform.jobs.launcher import run_training

    common = [f"data.shards={shards}", f"run.storage_path={work / 'runs'}", f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
              *(TINY_TRAIN if preset == "tiny" else [])]
    t = step("5/7 teacher (segmentation branch) on Ray Train")
    teacher = run_training("teacher", str(CONFIGS / "teacher.yaml"), common, progress=True)
    print(f"   {time.perf_counter() - t:.0f} s")
    t = step("6/7 student (RGB branch, weighted KD from the teacher) on Ray Train")
    student = run_training("student", str(CONFIGS / "student.yaml"), [*common, f"teacher={teacher['checkpoint']}"],
                           progress=True)
    print(f"   {time.perf_counter() - t:.0f} s")
    step("7/7 the student alone (no segmentation at test time) on the test split")
    code = run_eval(student["checkpoint"], str(shards), split="test", out=str(work / "eval"), progress=False)
    print(f"\nMLflow: `mlflow ui --backend-store-uri sqlite:///{work / 'mlflow.db'}`; models structvpr-teacher, structvpr-student")
    return code
