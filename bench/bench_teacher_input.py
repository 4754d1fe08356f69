"""Benchmark: the teacher's input from precomputed shards vs online segmentation, side by side, one core each.

    .venv/bin/python bench/bench_teacher_input.py            # small city, 20 batches x 5 rounds
    .venv/bin/python bench/bench_teacher_input.py --quick    # tiny city, 6 batches x 3 rounds

(a) shards: the training reader (`place_batches`, P=8 places x K=4 views = 32 images a batch) reads
    and decodes `jpg` and `seg.png`, and `seg_to_onehot` turns the ids into the [32, C, H, W] float
    batch the teacher reads.
(b) online: the same pipeline over the same shards with the same seed (so the same images in the
    same order) decodes only the `jpg`s, a segmentation model (`SegmentationPredictor` on a
    `seg train`-format checkpoint of the default FPN/resnet18, batch 32) predicts the ids at the
    same size, then `seg_to_onehot` as in (a).
torch uses one thread in both. Target: (a) at least 10x the images/s of (b).
"""

from __future__ import annotations

import json
import random
import time
from functools import partial

import common  # noqa: E402  (puts the repo on sys.path)

import numpy as np
import torch
import webdataset as wds

from structvpr.cli import parse_size
from structvpr.datasets.images import decode_rgb
from structvpr.datasets.shards.reader import (
    PlaceBatchConfig, _worker_id, place_batches, place_label, train_urls,
)
from structvpr.platform.models.inputs import seg_to_onehot

TARGET = 10.0


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city, fewer batches and rounds (about a minute)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--batches", type=int, help="batches of 32 images per candidate per round (default 20, quick 6)")
    p.add_argument("--size", default="160x120", help="WxH of the shards and of the model input")
    return p.parse_args(argv)


def decode_place_rgb(sample: dict, views: int, rng: random.Random) -> dict:
    """reader.decode_place without the seg.png: the same rng calls, so the same views are chosen."""
    meta = json.loads(sample["json"])
    stored = list(range(meta["num_views"]))
    chosen = rng.sample(stored, views) if len(stored) >= views else stored + rng.choices(stored, k=views - len(stored))
    rgb = np.stack([decode_rgb(sample[f"{i}.jpg"]) for i in chosen])
    return {"rgb": rgb, "place": place_label(sample["__key__"]), "key": sample["__key__"], "views": chosen}


def collate_rgb(samples: list[dict]) -> dict:
    return {"rgb": [s["rgb"] for s in samples], "keys": [s["key"] for s in samples],
            "views": [s["views"] for s in samples]}


def rgb_batches(urls: list[str], cfg: PlaceBatchConfig) -> wds.DataPipeline:
    """reader.place_batches (resampled, rank 0 of 1, epoch 0) with decode_place_rgb instead of decode_place."""
    base_seed = cfg.seed * 1_000_003
    rng = random.Random(base_seed)
    return wds.DataPipeline(
        wds.ResampledShards(urls, seed=base_seed, deterministic=True, worker_seed=_worker_id),
        wds.tarfile_to_samples(),
        wds.shuffle(cfg.shuffle_buffer, initial=min(cfg.shuffle_buffer, 64), seed=base_seed),
        wds.map(partial(decode_place_rgb, views=cfg.views_per_place, rng=rng)),
        wds.batched(cfg.places_per_batch, collation_fn=collate_rgb, partial=False),
    ).with_epoch(nbatches=cfg.batches_per_epoch)


def from_shards(urls, cfg, onehot_seconds: list, sink: list):
    def run() -> float:
        n = 0
        for batch in place_batches(urls, cfg, rank=0, world_size=1):
            start = time.perf_counter()
            x = seg_to_onehot(batch["seg"].flatten(0, 1))  # [P*K, C, H, W] float
            onehot_seconds.append(time.perf_counter() - start)
            sink.append(x.shape)
            n += x.shape[0]
        return n

    return run


def online(urls, cfg, predictor, model_seconds: list, sink: list):
    def run() -> float:
        n = 0
        for batch in rgb_batches(urls, cfg):
            images = [view for place in batch["rgb"] for view in place]  # P*K arrays of (H, W, 3)
            start = time.perf_counter()
            ids = predictor.predict(images)
            model_seconds.append(time.perf_counter() - start)
            x = seg_to_onehot(torch.from_numpy(np.stack(ids)))
            sink.append(x.shape)
            n += x.shape[0]
        return n

    return run


def same_images(urls, cfg) -> bool:
    """The two pipelines yield the same places and views in the same order."""
    one = PlaceBatchConfig(**{**cfg.__dict__, "batches_per_epoch": 2})
    a = [(b["keys"], b["views"].tolist()) for b in place_batches(urls, one, rank=0, world_size=1)]
    b = [(b["keys"], b["views"]) for b in rgb_batches(urls, one)]
    return a == b


def main(argv=None):
    args = parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    batches = args.batches or (6 if args.quick else 20)
    size = parse_size(args.size)
    common.start(threads=1)
    print(f"torch threads: {torch.get_num_threads()}")

    city = common.bench_city(args.quick)
    shard_dir = common.shards(city, size)
    urls = train_urls(shard_dir)
    ckpt = common.seg_checkpoint(size)
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor

    predictor = SegmentationPredictor(str(ckpt), device="cpu", batch_size=32)
    cfg = PlaceBatchConfig(places_per_batch=8, views_per_place=4, batches_per_epoch=batches, seed=0)
    print(f"shards: {shard_dir.name} ({len(urls)} train shards), model: {predictor.model_id}, "
          f"batch {cfg.places_per_batch}x{cfg.views_per_place} = {cfg.places_per_batch * cfg.views_per_place} images "
          f"at {size[0]}x{size[1]}, {batches} batches a round, {rounds} rounds")
    print(f"same images in both pipelines: {'yes' if same_images(urls, cfg) else 'NO'}")

    shapes_a, shapes_b, model_s, onehot_s = [], [], [], []
    res = common.interleaved({
        "shards": common.timed(from_shards(urls, cfg, onehot_s, shapes_a)),
        "online": common.timed(online(urls, cfg, predictor, model_s, shapes_b)),
    }, rounds)
    assert shapes_a[-1] == shapes_b[-1], (shapes_a[-1], shapes_b[-1])

    n_img = batches * cfg.places_per_batch * cfg.views_per_place
    timed_model = model_s[-rounds * batches:]  # the timed rounds only, not the warm-up
    model_rate = len(timed_model) * 32 / sum(timed_model)
    timed_onehot = onehot_s[-rounds * batches:]
    onehot_rate = len(timed_onehot) * 32 / sum(timed_onehot)
    common.print_table(
        ["pipeline", "images/s (median)", "min..max", "ms/batch of 32"],
        [
            ["(a) shards: read+decode jpg+seg.png, one-hot", f"{res.med('shards'):,.1f}", common.spread(res.rates["shards"]),
             f"{32e3 / res.med('shards'):.1f}"],
            ["    of which seg_to_onehot", f"{onehot_rate:,.1f}", "", f"{32e3 / onehot_rate:.1f}"],
            ["(b) online: read+decode jpg, model, one-hot", f"{res.med('online'):,.1f}", common.spread(res.rates["online"]),
             f"{32e3 / res.med('online'):.1f}"],
            ["    of which the model (predict)", f"{model_rate:,.1f}", "", f"{32e3 / model_rate:.1f}"],
        ],
        title=f"teacher input, {n_img} images a round, one-hot batch {tuple(shapes_a[-1])}",
    )
    ratio = res.ratio("shards", "online")
    print()
    print(common.verdict(ratio, TARGET, "ratio (a)/(b), images/s, median of per-round ratios"))
    return {"ratio": ratio, "shards": res.med("shards"), "online": res.med("online")}


if __name__ == "__main__":
    main()
