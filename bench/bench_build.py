"""Benchmark: shard building through the real Ray Data path, ground truth vs a segmentation model, and peak memory.

    .venv/bin/python bench/bench_build.py            # small city, 3 rounds; memory with gt and the model
    .venv/bin/python bench/bench_build.py --quick    # tiny city for speed, 2 rounds; memory with gt only

Speed: `build_shards("vg", city, out, BuildOptions(workers=2, ...))` (what `structvpr data shards` runs)
with `--seg-model gt` and with a `seg train`-format checkpoint (FPN/resnet18, untrained: its speed
is that of a trained one), same city, same size, interleaved round by round in one process that
keeps one local Ray up (started once, before the rounds). Reported: images/s end to end (each build's
wall time, actor start-up and model load included) and images per actor-second (the writers' own
time, from the per-shard stats), and the ratio model/gt measured side by side.

Memory: a fresh process builds the shards of a city of N images and of about 6N images (the tiny
preset rendered at the small preset's 320x240, and the small preset: same source size; --mem-cities
small,medium for a larger pair), with its own Ray; a thread here sums the RSS of that process and all its descendants (driver, gcs_server,
raylet, dashboard, Ray workers and actors) every 0.2 s. The builder streams (one shard per actor
task, images in chunks of 32), so the peak should not grow with the dataset: ratio close to 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: E402  (puts the repo on sys.path)

from structvpr.cli import parse_size


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city for speed, 2 rounds, memory with gt only")
    p.add_argument("--rounds", type=int, help="interleaved rounds of gt and model builds (default 3, quick 2)")
    p.add_argument("--size", default="160x120", help="WxH written to the shards (and the model's input)")
    p.add_argument("--shard-images", type=int, default=250)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mem-seg", help="comma list of gt,model for the memory runs (default gt,model; quick gt)")
    p.add_argument("--mem-cities", default="tiny@320x240,small",
                   help="the two cities of the memory runs, PRESET[@WxH], smaller first (e.g. small,medium)")
    p.add_argument("--skip", choices=["speed", "memory"], help="leave one part out")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run a part in this (child) process
    p.add_argument("--city", help=argparse.SUPPRESS)
    p.add_argument("--seg", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- child processes


def speed_worker(args) -> None:
    """In a child: one local Ray, a warm-up build, then gt and model builds alternating; JSON out."""
    common.quiet_ray_logs()
    size, rounds = parse_size(args.size), args.rounds
    specs = {"gt": "gt", "model": args.seg}
    out_root = common.WORK / "build-bench"
    t0 = time.perf_counter()
    common.start_local_ray()
    ray_start = time.perf_counter() - t0
    common.build(args.city, out_root / "warmup", "gt", size, args.shard_images, args.workers)
    results = {name: [] for name in specs}
    for r in range(rounds):
        order = list(specs) if r % 2 == 0 else list(specs)[::-1]
        for name in order:
            start = time.perf_counter()
            manifest = common.build(args.city, out_root / name, specs[name], size, args.shard_images, args.workers)
            wall = time.perf_counter() - start
            actor_s = sum(s["seconds"] for s in manifest["shards"])
            images = manifest["totals"]["images"]
            results[name].append({"images": images, "wall": wall, "actor_seconds": actor_s,
                                  "shards": manifest["totals"]["shards"]})
            print(f"  round {r + 1}/{rounds} {name}: {images} images in {wall:.1f} s "
                  f"({images / wall:.1f}/s; {images / actor_s:.1f} per actor-second)", flush=True)
    Path(args.result).write_text(json.dumps({"results": results, "ray_start_s": ray_start}))


def build_worker(args) -> None:
    """In a child: one build with its own Ray (what the parent measures the memory of)."""
    common.quiet_ray_logs()
    manifest = common.build(args.city, args.out, args.seg, parse_size(args.size), args.shard_images, args.workers)
    Path(args.result).write_text(json.dumps({"images": manifest["totals"]["images"],
                                             "shards": manifest["totals"]["shards"]}))


def child(args, worker: str, **extra) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", worker, "--size", args.size, "--shard-images",
           str(args.shard_images), "--workers", str(args.workers)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    return cmd


# ---------------------------------------------------------------- parts


def speed(args, city: Path, ckpt: Path, rounds: int) -> dict:
    result = common.WORK / "build-bench" / "speed.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n[speed] {city.name} -> shards at {args.size}, workers={args.workers}, {rounds} rounds "
          f"(after one warm-up gt build), model {ckpt.name}", flush=True)
    subprocess.run(child(args, "speed", city=city, seg=ckpt, rounds=rounds, result=result), check=True)
    data = json.loads(result.read_text())
    res = data["results"]
    wall = {k: [r["images"] / r["wall"] for r in v] for k, v in res.items()}
    actor = {k: [r["images"] / r["actor_seconds"] for r in v] for k, v in res.items()}
    rows = []
    for name, label in (("gt", "--seg-model gt"), ("model", "--seg-model CKPT (FPN/resnet18)")):
        rows.append([label, res[name][0]["images"], res[name][0]["shards"], f"{common.median(wall[name]):,.1f}",
                     common.spread(wall[name]), f"{common.median(actor[name]):,.1f}"])
    common.print_table(["build", "images", "shards", "images/s (median)", "min..max", "images/actor-s"], rows,
                       title=f"shard building, {rounds} rounds (Ray started once in {data['ray_start_s']:.1f} s, not counted)")
    ratio_wall = common.median(m / g for m, g in zip(wall["model"], wall["gt"]))
    ratio_actor = common.median(m / g for m, g in zip(actor["model"], actor["gt"]))
    print(f"ratio model/gt, images/s end to end: {ratio_wall:.3f} (gt is {1 / ratio_wall:.1f}x faster)")
    print(f"ratio model/gt, images per actor-second: {ratio_actor:.3f} (gt is {1 / ratio_actor:.1f}x faster)")
    return {"gt": common.median(wall["gt"]), "model": common.median(wall["model"]), "ratio": ratio_wall}


def peak_rss(args, city: Path, seg: str, tag: str) -> dict:
    out = common.WORK / "build-bench" / f"mem-{tag}"
    result = common.WORK / "build-bench" / f"mem-{tag}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(child(args, "build", city=city, seg=seg, out=out, result=result))
    with common.TreeRSS(proc.pid, interval=0.2) as sampler:
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"the build of {city.name} failed (exit {rc})")
    info = json.loads(result.read_text())
    top = sorted(sampler.peak_breakdown.items(), key=lambda kv: -kv[1])[:5]
    return {"images": info["images"], "shards": info["shards"], "peak": sampler.peak, "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_processes, "max_processes": sampler.max_processes,
            "samples": sampler.samples, "seconds": time.perf_counter() - start, "top": top}


def memory(args, small_city: Path, big_city: Path, ckpt: Path, segs: list[str]) -> dict:
    print(f"\n[memory] peak RSS of the build's process tree, sampled every 0.2 s; "
          f"{small_city.name} vs {big_city.name}, segs {','.join(segs)}", flush=True)
    found = {}
    for seg in segs:
        spec = "gt" if seg == "gt" else str(ckpt)
        for which, city in (("N", small_city), ("big", big_city)):
            found[seg, which] = m = peak_rss(args, city, spec, f"{seg}-{which}")
            top = ", ".join(f"{name} {common.mib(b):.0f}" for name, b in m["top"])
            print(f"  {seg:5s} {city.name}: {m['images']} images, peak RSS {common.mib(m['peak']):,.0f} MiB "
                  f"(PSS {common.mib(m['peak_pss']):,.0f}) over "
                  f"{m['processes']} processes (top MiB: {top}), {m['seconds']:.0f} s", flush=True)
    rows, ratios = [], {}
    for seg in segs:
        n, big = found[seg, "N"], found[seg, "big"]
        ratios[seg] = big["peak"] / n["peak"]
        for m, city in ((n, small_city), (big, big_city)):
            rows.append([f"{seg}: {city.name}", m["images"], m["shards"], f"{common.mib(m['peak']):,.0f}",
                         f"{common.mib(m['peak_pss']):,.0f}", m["processes"], m["max_processes"], m["samples"]])
    common.print_table(["build", "images", "shards", "peak RSS MiB", "peak PSS MiB", "procs at peak", "max procs",
                        "samples"], rows,
                       title="peak memory of the whole process tree (driver + Ray), summed over its processes")
    for seg in segs:
        n, big = found[seg, "N"], found[seg, "big"]
        pss = big["peak_pss"] / n["peak_pss"]
        print(f"{seg}: dataset {big['images'] / n['images']:.1f}x larger -> peak RSS ratio {ratios[seg]:.2f}, "
              f"peak PSS ratio {pss:.2f} ({'does not grow' if ratios[seg] < 1.15 else 'GROWS'} with the dataset; "
              f"within 15% counts as flat)")
    return ratios


def _city(spec: str) -> Path:
    preset, _, size = spec.partition("@")
    return common.city(preset, parse_size(size) if size else None)


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "speed":
        return speed_worker(args)
    if args.worker == "build":
        return build_worker(args)
    rounds = args.rounds or (2 if args.quick else 3)
    segs = (args.mem_seg or ("gt" if args.quick else "gt,model")).split(",")
    print(common.machine_line())
    ckpt = common.seg_checkpoint(parse_size(args.size))
    if args.skip != "speed":
        speed(args, common.bench_city(args.quick), ckpt, rounds)
    if args.skip != "memory":
        small_spec, big_spec = args.mem_cities.split(",")
        memory(args, _city(small_spec), _city(big_spec), ckpt, segs)


if __name__ == "__main__":
    main()
