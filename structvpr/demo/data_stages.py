"""The demo's data stages: synthetic city, segmentation model, shards with predicted and with ground-truth
segmentation (the teacher is evaluated on both), and a verification of the shards the models train on."""

from __future__ import annotations

from pathlib import Path

from structvpr.demo.presets import Preset
from structvpr.demo.stages import Stages


class ShardsFailedVerification(RuntimeError):
    """The shards the models would train on do not match their manifest: nothing is trained on them."""


def data_stages(stages: Stages, work: Path, preset: Preset, seed: int, progress: bool) -> dict:
    city, ckpt = work / "city", work / "seg.ckpt"
    stages.run("city", f"synthetic city ({preset.city}) -> {city}", lambda: _city(city, preset, seed, progress))
    seg = stages.run("segmentation", f"segmentation model (smp, from scratch) -> {ckpt}",
                     lambda: _segmentation(city, ckpt, preset, seed, progress))
    shards = stages.run("shards", f"WebDataset shards with predicted segmentation -> {work / 'shards'}",
                        lambda: _shards(city, work / "shards", str(ckpt), preset, progress))
    stages.run("verify", f"verify {work / 'shards'}", lambda: _verify(work / "shards", progress))
    gt = stages.run("shards_gt", f"the same images with ground-truth segmentation -> {work / 'shards-gt'} "
                                 "(the teacher is evaluated on both)",
                    lambda: _shards(city, work / "shards-gt", "gt", preset, progress))
    return {"city": str(city), "segmentation": seg, "shards": shards["folder"], "shards_gt": gt["folder"],
            "images": shards["images"]}


def _city(city: Path, preset: Preset, seed: int, progress: bool) -> dict:
    from structvpr.datasets.synth import generate_city

    summary = generate_city(city, preset=preset.city, seed=seed, progress=progress)
    return {"folder": str(city), "summary": summary}


def _segmentation(city: Path, ckpt: Path, preset: Preset, seed: int, progress: bool) -> dict:
    from structvpr.datasets.segmentation.train import train_segmentation

    metrics = train_segmentation(city, ckpt, seed=seed, progress=progress, **preset.seg)
    print("   " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                            if not isinstance(v, (dict, list))))
    return {"checkpoint": str(ckpt), "metrics": metrics}


def _shards(city: Path, out: Path, seg_model: str, preset: Preset, progress: bool) -> dict:
    from structvpr.datasets.shards.build import BuildOptions, build_shards
    from structvpr.datasets.shards.manifest import print_build_summary

    # A rerun after a crash finds a half-written build of its own there: --overwrite removes only ours.
    opts = BuildOptions(seg_model=seg_model, image_size=preset.shard_size, images_per_place=4, shard_images=500,
                        progress=progress, overwrite=True)
    manifest = build_shards("vg", city, out, opts)
    print_build_summary(manifest, str(out))
    return {"folder": str(out), "images": manifest["totals"]["images"], "segmentation": manifest["segmentation"]}


def _verify(shards: Path, progress: bool) -> dict:
    from structvpr.datasets.shards.verify import verify_shards

    report = verify_shards(shards, progress=progress)
    print(f"   {'OK' if report.ok else 'FAILED'}: {report.shards} shards, {report.samples} samples, "
          f"{report.images} images")
    if not report.ok:
        raise ShardsFailedVerification(f"{shards} failed verification: " + "; ".join(report.problems))
    return {"shards": report.shards, "samples": report.samples, "images": report.images}
