"""Benchmark: test-time cost of the RGB student vs the teacher path (online segmentation + teacher), side by side.

    .venv/bin/python bench/bench_inference.py            # 160x120 and 320x240, batch 1 and 32, 1 then 2 threads
    .venv/bin/python bench/bench_inference.py --quick    # 160x120 only, 2 rounds (about a minute)

The paper's point: at test time only the RGB student runs; no segmentation model is needed.
Both paths start from the same decoded uint8 RGB images (H, W, 3) of the synthetic city:

(a) student: stack -> uint8 [B, 3, H, W] -> `student.embed` (resnet18 + GeM, RGB branch of
    `create_branch`: ImageNet normalisation, backbone, GeM, L2), as serving and evaluation run it.
(b) teacher path: `SegmentationPredictor.predict` (a `seg train`-format checkpoint of the default
    segmentation model, FPN/resnet18, built with `build_model` and saved with the checkpoint
    module; untrained weights: speed does not depend on training) -> category ids [B, H, W]
    -> `teacher.embed` (resnet18 + GeM reading the 8 one-hot category channels).

Same image size in both (the segmentation checkpoint predicts at that size, no resize), both
branches loaded as `load_branch` loads them (`for_inference`: eval mode, channels_last; the
predictor also runs channels_last), torch.inference_mode, torch intra-op threads 1, then 2. Batch 1: --single images, one
call each; batch 32: one call of 32. Rounds are interleaved (a b, b a, ...); medians.
Target: (a) at least 3x the images/s of (b) in every configuration.
"""

from __future__ import annotations

import time

import common  # noqa: E402  (puts the repo on sys.path)

import numpy as np
import torch

from structvpr.cli import parse_size
from structvpr.datasets.class_maps import NUM_CATEGORIES
from structvpr.datasets.images import load_rgb
from structvpr.datasets.segmentation.predictor import SegmentationPredictor
from structvpr.platform.models import create_branch

TARGET = 3.0


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="160x120 only, 2 rounds")
    p.add_argument("--sizes", help="comma list of WxH (default 160x120,320x240; quick 160x120)")
    p.add_argument("--batches", default="1,32", help="comma list of batch sizes")
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts, run in this order")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--single", type=int, default=8, help="images per call at batch 1 (one call each)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--dim", type=int, default=256, help="descriptor size (recipes' default 256)")
    return p.parse_args(argv)


def city_images(size: tuple[int, int], n: int) -> list[np.ndarray]:
    """n RGB images of the tiny city (rendered at 320x240), resized to size=(W, H) as the shard builder does."""
    folder = common.city("tiny", (320, 240))
    paths = sorted((folder / "images").rglob("*.jpg"))[:n]
    if len(paths) < n:
        raise SystemExit(f"the city {folder} holds {len(paths)} images, fewer than {n}")
    return [load_rgb(p, size)[0] for p in paths]


def student_path(student, images: list[np.ndarray], batch: int, sink: list):
    def run() -> float:
        with torch.inference_mode():
            for k in range(0, len(images), batch):
                raw = torch.from_numpy(np.stack(images[k : k + batch])).permute(0, 3, 1, 2)  # uint8 [B, 3, H, W]
                sink.append(student.embed(raw))
        return len(images)

    return run


def teacher_path(predictor, teacher, images: list[np.ndarray], batch: int, sink: list, seg_seconds: list):
    def run() -> float:
        seg = 0.0
        with torch.inference_mode():
            for k in range(0, len(images), batch):
                start = time.perf_counter()
                ids = predictor.predict(images[k : k + batch])  # uint8 (H, W) category maps
                seg += time.perf_counter() - start
                sink.append(teacher.embed(torch.from_numpy(np.stack(ids))))
        seg_seconds.append(seg)  # one entry per call of the candidate (round)
        return len(images)

    return run


def main(argv=None):
    args = parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    sizes = [parse_size(s)
             for s in (args.sizes or ("160x120" if args.quick else "160x120,320x240")).split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    common.start(threads[0])  # also fixes the inter-op pool at one thread (settable once)
    print(f"models: student {args.backbone}+GeM (3 ch), teacher {args.backbone}+GeM ({NUM_CATEGORIES} ch), "
          f"dim {args.dim}; segmentation: seg-train checkpoint (default FPN/resnet18, untrained weights)")
    print(f"batch 1: {args.single} calls of one image; batch 32: one call; {rounds} interleaved rounds + 1 warm-up")

    torch.manual_seed(0)
    models = {}
    for w, h in sizes:
        # for_inference (eval, channels_last) is how `structvpr eval` and the student job load models.
        student = create_branch(args.backbone, 3, "gem", args.dim, image_hw=(h, w)).for_inference()
        teacher = create_branch(args.backbone, NUM_CATEGORIES, "gem", args.dim, image_hw=(h, w)).for_inference()
        predictor = SegmentationPredictor(str(common.seg_checkpoint((w, h))), device="cpu", batch_size=32)
        assert predictor.image_size == (w, h), predictor.image_size
        models[(w, h)] = (student, teacher, predictor, city_images((w, h), max(32, args.single)))
        print(f"{w}x{h}: segmentation model {predictor.model_id}")

    rows, ratios = [], []
    for t in threads:
        torch.set_num_threads(t)
        for (w, h), (student, teacher, predictor, images) in models.items():
            for b in batches:
                imgs = images[: args.single] if b == 1 else images[:b]
                out_a, out_b, seg_s = [], [], []
                print(f"\n{w}x{h}, batch {b}, {t} thread(s), {len(imgs)} images a call of each candidate", flush=True)
                res = common.interleaved({
                    "student": common.timed(student_path(student, imgs, b, out_a)),
                    "teacher_path": common.timed(teacher_path(predictor, teacher, imgs, b, out_b, seg_s)),
                }, rounds)
                assert out_a[-1].shape == out_b[-1].shape, (out_a[-1].shape, out_b[-1].shape)
                seg_rate = common.median(len(imgs) / x for x in seg_s[-rounds:])  # timed rounds, not the warm-up
                ratio = res.ratio("student", "teacher_path")
                ratios.append(ratio)
                rows.append([f"{w}x{h}", b, t, f"{res.med('student'):,.1f}", common.spread(res.rates["student"]),
                             f"{res.med('teacher_path'):,.1f}", common.spread(res.rates["teacher_path"]),
                             f"{seg_rate:,.1f}", f"{ratio:.2f}"])
    common.print_table(
        ["size", "batch", "threads", "(a) student img/s", "min..max", "(b) seg+teacher img/s", "min..max",
         "seg model alone img/s", "ratio a/b"],
        rows, title="test-time embedding, images/s (median of rounds); ratio: median of per-round ratios")
    print()
    print(common.verdict(min(ratios), TARGET, "smallest ratio (a)/(b) over all configurations"))
    return {"ratios": ratios, "rows": rows}


if __name__ == "__main__":
    main()
