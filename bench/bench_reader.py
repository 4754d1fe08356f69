"""Benchmark: our shard reader vs a folder-of-files reader vs the raw decode rate, same images, one process.

    .venv/bin/python bench/bench_reader.py            # small city (320x240 sources), shards at 160x120, 7 rounds
    .venv/bin/python bench/bench_reader.py --quick    # tiny city rendered at 320x240, 3 epochs a call, 3 rounds

Two workloads, each over the images that are in the shards:
  eval   every image of the val and test shards (database and queries)
  train  the views of the train place shards, read as the training recipe's defaults do
         (data.places_per_batch P=32, views_per_place K=4, shuffle_buffer 256, batches_per_epoch 20;
         --quick: 8 batches), resampled
and three readers of each, interleaved round by round, single process, one torch thread:
(a) ours    eval: `eval_samples` (tar -> decode jpg + seg.png + json);
            train: `place_stream`, as a training job reads: one resampled stream for the whole run
            (tar -> shuffle -> decode -> [P,K,3,H,W] / [P,K,H,W] tensors), each timed call its next epoch
(b) folder  the public benchmarks' way: per image, PIL opens the source file of the VG image tree,
            converts to RGB and resizes it to the training size (bilinear) every epoch, and opens the
            label png and resizes it (nearest); train also stacks batches of 32 into the same tensors
(c) decode  the ceiling of one core: the same jpg and seg.png members as in the shards, already in
            memory as bytes, decoded with PIL (Image.open(BytesIO).convert("RGB") / mode L to numpy)
plus, for where the time goes:
(c') the same in-memory bytes through the reader's own decoders (`decode_rgb`: simplejpeg for JPEG;
     `decode_ids`: PIL for the png): (a)/(c') is the share of the reader's time spent decoding;
(a0) the tar reading alone, no decoding (images/s of the samples' images), with the reader's
     `tar_samples`, and (a0w) with webdataset's `tarfile_to_samples` (Python's tarfile).
(A former row, (a*), read a copy of the shards without per-member pax headers; the writer has
written no pax headers since, so (a*) and (a) became the same thing and the row was dropped.)
Targets: (a) at least as fast as (b) (ratio a/b >= 1) and (a) at least 70% of (c) (ratio a/c >= 0.7);
the run also checks (a) against 70% of (c'), the stricter reading (the fastest decoders at hand).
--profile FILE additionally writes a cProfile of (a) for each workload (py-spy: `py-spy record -o
x.svg -- python bench/bench_reader.py --only ours`).
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from pathlib import Path

import common  # noqa: E402  (puts the repo on sys.path)

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from structvpr.cli import parse_size
from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.shards.manifest import load_manifest
from structvpr.datasets.shards.reader import PlaceBatchConfig, eval_samples, place_stream, train_urls
from structvpr.datasets.shards.tar_reader import read_tar_samples
from structvpr.platform.recipe import DataSection

TARGET_VS_FOLDER = 1.0
TARGET_VS_DECODE = 0.7
EVAL_PARTS = [(split, role) for split in ("val", "test") for role in ("database", "queries")]


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city, 3 rounds (about a minute)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 7, quick 3)")
    p.add_argument("--epochs", type=int, help="passes over the workload per timed call (default 1, quick 3)")
    p.add_argument("--size", default="160x120", help="WxH of the shards = the training size")
    p.add_argument("--only", choices=["ours", "folder", "decode", "decoders", "read", "read_wds"], help="run one reader (for a profiler)")
    p.add_argument("--profile", type=Path, help="write cProfile stats of (a) here (FILE.eval, FILE.train) and print the top")
    return p.parse_args(argv)


# ---------------------------------------------------------------- inputs


def shard_members(urls: list[str]) -> list[dict]:
    """Every sample of these shards with its raw members, read once with plain webdataset."""
    return list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))


def eval_inputs(shard_dir: Path, city: Path) -> tuple[list[str], list[tuple[bytes, bytes]], list[tuple[str, str]]]:
    urls = [u for split, role in EVAL_PARTS for u in _paths(shard_dir, split, role)]
    samples = shard_members(urls)
    members = [(s["jpg"], s["seg.png"]) for s in samples]
    files = [_source_and_label(json.loads(s["json"])["source_path"], city) for s in samples]
    return urls, members, files


def train_inputs(shard_dir: Path, city: Path) -> tuple[list[str], list[tuple[bytes, bytes]], list[tuple[str, str]]]:
    urls = train_urls(shard_dir)
    members, files = [], []
    for s in shard_members(urls):
        meta = json.loads(s["json"])
        for i, view in enumerate(meta["views"]):
            members.append((s[f"{i}.jpg"], s[f"{i}.seg.png"]))
            files.append(_source_and_label(view["source_path"], city))
    return urls, members, files


def _paths(shard_dir: Path, split: str, role: str) -> list[str]:
    manifest = load_manifest(shard_dir)
    return [str(shard_dir / s["path"]) for s in manifest["shards"]
            if s["path"].startswith(f"{split}/{role}-") and s["samples"] > 0]


def _source_and_label(source: str, city: Path) -> tuple[str, str]:
    """The VG layout's label of an image: ROOT/labels/<same relative path>.png."""
    rel = Path(source).resolve().relative_to(city.resolve() / "images")
    return source, str(city / "labels" / rel.with_suffix(".png"))


# ---------------------------------------------------------------- readers


def ours_eval(shard_dir: Path, epochs: int):
    def run() -> float:
        n = 0
        for _ in range(epochs):
            for split, role in EVAL_PARTS:
                for sample in eval_samples(shard_dir, split, role):
                    n += sample["rgb"].shape[0] > 0
        return n

    return run


def ours_train(urls: list[str], cfg: PlaceBatchConfig, epochs: int):
    """As a training job reads: one stream for the whole run (place_stream), each call its next epochs."""
    stream = place_stream(urls, cfg, rank=0, world_size=1)

    def run() -> float:
        n = 0
        for _ in range(epochs):
            for batch in stream:
                n += batch["rgb"].shape[0] * batch["rgb"].shape[1]
        return n

    return run


def tar_only(urls: list[str], images_per_sample, epochs: int, webdataset: bool = False):
    def run() -> float:
        n = 0
        for _ in range(epochs):
            samples = (wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()) if webdataset
                       else read_tar_samples(urls))
            for sample in samples:
                n += images_per_sample(sample)
        return n

    return run


def views_of(sample: dict) -> int:
    return json.loads(sample["json"])["num_views"]


def load_resized(path: str, label: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """What a folder dataset's __getitem__ does: open, RGB, resize to the training size; the label too."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR))
    with Image.open(label) as lab:
        seg = np.asarray(lab.resize(size, Image.NEAREST))
    return rgb, seg


def folder(files: list[tuple[str, str]], size: tuple[int, int], epochs: int, batch: int | None):
    def run() -> float:
        n = 0
        for _ in range(epochs):
            rgbs, segs = [], []
            for path, label in files:
                rgb, seg = load_resized(path, label, size)
                n += 1
                if batch:
                    rgbs.append(rgb)
                    segs.append(seg)
                    if len(rgbs) == batch:  # the same tensors as collate_places
                        torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).contiguous()
                        torch.from_numpy(np.stack(segs))
                        rgbs, segs = [], []
        return n

    return run


def decoders(members: list[tuple[bytes, bytes]], epochs: int):
    """(c'): the reader's own decode functions on the same in-memory bytes."""
    def run() -> float:
        n = 0
        for _ in range(epochs):
            for jpg, png in members:
                n += decode_rgb(jpg).shape[0] > 0 and decode_ids(png).shape[0] > 0
        return n

    return run


def decode(members: list[tuple[bytes, bytes]], epochs: int):
    def run() -> float:
        n = 0
        for _ in range(epochs):
            for jpg, png in members:
                with Image.open(io.BytesIO(jpg)) as img:
                    rgb = np.asarray(img.convert("RGB"))
                with Image.open(io.BytesIO(png)) as lab:
                    seg = np.asarray(lab)
                n += rgb.shape[0] > 0 and seg.shape[0] > 0
        return n

    return run


# ---------------------------------------------------------------- main


def run_workload(name: str, candidates: dict, rounds: int, n_images: int, size) -> dict:
    print(f"\n[{name}] {n_images} images a pass at {size[0]}x{size[1]}", flush=True)
    res = common.interleaved(candidates, rounds)
    labels = {
        "ours": "(a) ours: eval_samples" if name == "eval" else "(a) ours: place_stream",
        "folder": "(b) folder: PIL open+resize per file",
        "decode": "(c) decode: PIL on in-memory bytes",
        "decoders": "(c') decode: the reader's decoders, same bytes",
        "read": "(a0) tar read only: tar_samples",
        "read_wds": "(a0w) tar read only: webdataset/tarfile",
    }
    rows = [[labels[k], f"{res.med(k):,.1f}", common.spread(res.rates[k])] for k in res.names]
    common.print_table(["reader", "images/s (median)", "min..max"], rows, title=f"{name}: images/s, {rounds} rounds")
    out = {k: res.med(k) for k in res.names}
    if {"ours", "folder", "decode"} <= set(res.names):
        out["a/b"], out["a/c"] = res.ratio("ours", "folder"), res.ratio("ours", "decode")
        print(common.verdict(out["a/b"], TARGET_VS_FOLDER, f"{name}: ratio (a)/(b) ours vs folder"))
        print(common.verdict(out["a/c"], TARGET_VS_DECODE, f"{name}: ratio (a)/(c) ours vs raw decode"))
    if {"ours", "decoders"} <= set(res.names):
        out["a/c'"] = res.ratio("ours", "decoders")
        print(common.verdict(out["a/c'"], TARGET_VS_DECODE, f"{name}: ratio (a)/(c') ours vs its own decoders"))
    return out


def profile(fn, path: Path) -> None:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    prof.dump_stats(str(path))
    print(f"\ncProfile of (a) -> {path} (top 12 by own time)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv=None):
    args = parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    epochs = args.epochs or (3 if args.quick else 1)
    size = parse_size(args.size)
    common.start(threads=1)
    city = common.bench_city(args.quick)
    shard_dir = common.shards(city, size)
    src = Image.open(next((city / "images").rglob("*.jpg"))).size
    print(f"city {city.name} (sources {src[0]}x{src[1]}), shards {shard_dir.name}, {epochs} pass(es) a call, "
          f"torch threads {torch.get_num_threads()}")

    results = {}
    urls, members, files = eval_inputs(shard_dir, city)
    cands = {"ours": common.timed(ours_eval(shard_dir, epochs)),
             "folder": common.timed(folder(files, size, epochs, batch=None)),
             "decode": common.timed(decode(members, epochs)),
             "decoders": common.timed(decoders(members, epochs)),
             "read": common.timed(tar_only(urls, lambda s: 1, epochs)),
             "read_wds": common.timed(tar_only(urls, lambda s: 1, epochs, webdataset=True))}
    if args.only:
        cands = {args.only: cands[args.only]}
    results["eval"] = run_workload("eval", cands, rounds, len(files), size)
    if args.profile:
        profile(ours_eval(shard_dir, epochs), args.profile.with_suffix(".eval"))

    urls, members, files = train_inputs(shard_dir, city)
    d = DataSection()
    cfg = PlaceBatchConfig(places_per_batch=d.places_per_batch, views_per_place=d.views_per_place,
                           shuffle_buffer=d.shuffle_buffer, seed=0, resampled=True,
                           batches_per_epoch=8 if args.quick else d.batches_per_epoch)
    per_epoch = cfg.places_per_batch * cfg.views_per_place * cfg.batches_per_epoch
    passes = max(1, round(per_epoch / len(files)))  # (b), (c): about as many images a call as (a)
    print(f"\ntrain: P={cfg.places_per_batch} K={cfg.views_per_place} shuffle_buffer={cfg.shuffle_buffer} "
          f"batches_per_epoch={cfg.batches_per_epoch}: (a) {per_epoch} images an epoch; (b), (c) {passes} passes "
          f"over the {len(files)} train views")
    cands = {"ours": common.timed(ours_train(urls, cfg, epochs)),
             "folder": common.timed(folder(files, size, epochs * passes, batch=32)),
             "decode": common.timed(decode(members, epochs * passes)),
             "decoders": common.timed(decoders(members, epochs * passes)),
             "read": common.timed(tar_only(urls, views_of, epochs * passes)),
             "read_wds": common.timed(tar_only(urls, views_of, epochs * passes, webdataset=True))}
    if args.only:
        cands = {args.only: cands[args.only]}
    results["train"] = run_workload("train", cands, rounds, len(files), size)
    if args.profile:
        profile(ours_train(urls, cfg, epochs), args.profile.with_suffix(".train"))
    return results


if __name__ == "__main__":
    main()
