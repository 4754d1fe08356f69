"""Shared helpers of the benchmarks: their argument parser, interleaved timing rounds, medians, cached city
and shard fixtures, a tiny segmentation checkpoint, a teacher with random weights, and peak-RSS sampling
of a process tree.

The machine these run on is small and shared, so every benchmark measures its candidates side by
side in the same run (round 1: A B C, round 2: C B A, ...) and reports the median of each and
their ratios; an absolute number alone says little when other jobs come and go.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "results" / "work"  # git-ignored (bench/results/)

if str(REPO) not in sys.path:  # `python bench/bench_x.py` puts bench/ first on the path, not the repo
    sys.path.insert(0, str(REPO))


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first line of a benchmark's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


# ---------------------------------------------------------------- timing


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


@dataclass
class Timed:
    """What one call of a candidate did: units of work (images) in seconds."""

    units: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Rounds:
    """Rates of each candidate, one per round, in the order the candidates were given."""

    names: list[str]
    rates: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def med(self, name: str) -> float:
        return median(self.rates[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of rate(a) / rate(b) measured in the same round, side by side."""
        return median(x / y for x, y in zip(self.rates[a], self.rates[b]) if y > 0)


def interleaved(candidates: dict[str, Callable[[], Timed]], rounds: int, warmup: bool = True,
                verbose: bool = True) -> Rounds:
    """Run every candidate once per round, alternating the order (ABC, CBA, ...); keep each call's rate.

    warmup: one untimed call of each first (imports, page cache, lazy init).
    """
    names = list(candidates)
    out = Rounds(names, {n: [] for n in names}, {n: [] for n in names})
    if warmup:
        for name in names:
            candidates[name]()
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t = candidates[name]()
            out.rates[name].append(t.rate)
            out.seconds[name].append(t.seconds)
        if verbose:
            line = "  ".join(f"{n} {out.rates[n][-1]:,.1f}/s" for n in names)
            print(f"  round {r + 1}/{rounds}: {line}", flush=True)
    return out


def timed(fn: Callable[[], float]) -> Callable[[], Timed]:
    """Wrap fn() -> units of work into a candidate that times itself."""

    def run() -> Timed:
        start = time.perf_counter()
        units = fn()
        return Timed(units, time.perf_counter() - start)

    return run


def spread(values) -> str:
    """min..max of a list, for the table: how noisy the rounds were."""
    values = list(values)
    return f"{min(values):,.1f}..{max(values):,.1f}" if values else "-"


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def verdict(value: float, target: float, text: str) -> str:
    return f"{text}: {value:.2f} (target >= {target:g}) -> {'MET' if value >= target else 'NOT MET'}"


# ---------------------------------------------------------------- machine


def machine_line() -> str:
    load = os.getloadavg()
    return (f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (at start; other jobs share the cores)")


def start(threads: int = 1) -> None:
    """What a timing benchmark starts with: the machine line, and torch held to `threads` threads."""
    print(machine_line())
    limit_threads(threads)


def limit_threads(n: int = 1) -> None:
    """One core per candidate: torch intra-op threads and the BLAS pools of numpy."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set once in this process
        pass


# ---------------------------------------------------------------- fixtures


def city(preset: str, image_size: tuple[int, int] | None = None, seed: int = 0, workers: int = 2) -> Path:
    """A synthetic city rendered once into WORK and reused by every later run with the same settings."""
    from structvpr.datasets.synth import generate_city

    size = f"-{image_size[0]}x{image_size[1]}" if image_size else ""
    out = WORK / f"city-{preset}{size}-s{seed}"
    meta = out / "synth.json"
    if meta.is_file() and json.loads(meta.read_text()).get("complete"):
        return out
    print(f"rendering the {preset} city{size} into {out} (once; later runs reuse it) ...", flush=True)
    summary = generate_city(out, preset, seed=seed, image_size=image_size, workers=workers, progress=False)
    print(f"  {count_images(out)} images in {summary['seconds']:.1f} s", flush=True)
    return out


def bench_city(quick: bool) -> Path:
    """The benchmarks' city: the tiny one (rendered at 320x240) for quick runs, else the small one."""
    return city("tiny", (320, 240)) if quick else city("small")


def count_images(city_dir: Path) -> int:
    summary = json.loads((Path(city_dir) / "synth.json").read_text())["summary"]
    return sum(n for roles in summary["images"].values() for n in roles.values())


def seg_checkpoint(image_size: tuple[int, int]) -> Path:
    """A segmentation checkpoint in `seg train`'s format, with untrained weights: the speed of a
    forward pass does not depend on how well the model is trained, and this takes a second."""
    import torch

    from structvpr.datasets.segmentation.checkpoint import SegCheckpoint, save_checkpoint
    from structvpr.datasets.segmentation.model import build_model
    from structvpr.datasets.segmentation.train_config import DEFAULT_ARCH, DEFAULT_ENCODER
    from structvpr.datasets.class_maps import NUM_CATEGORIES

    path = WORK / f"seg-{DEFAULT_ARCH}-{DEFAULT_ENCODER}-{image_size[0]}x{image_size[1]}.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH, DEFAULT_ENCODER, NUM_CATEGORIES)
    ckpt = SegCheckpoint(arch=DEFAULT_ARCH, encoder=DEFAULT_ENCODER, num_classes=NUM_CATEGORIES,
                         class_map="categories", image_size=tuple(image_size), state_dict=model.state_dict(),
                         metrics={"note": "untrained: benchmark speed only"})
    return save_checkpoint(ckpt, path)


def scratch_teacher(recipe, seed: int, folder: Path = WORK) -> str:
    """A teacher checkpoint for a student recipe, with random weights from `seed`, for `build_job` to load.

    The recipe's backbone, aggregator and dim, reading the shards' one-hot categories at their size; the
    speed of a step does not depend on how well the teacher is trained. Written again on every call (a second).
    """
    import torch

    from structvpr.datasets.shards.manifest import Manifest
    from structvpr.platform.models import create_branch
    from structvpr.platform.store.checkpoint import save_state

    manifest = Manifest.load(recipe.data.shards)
    width, height = manifest.image_size
    m = recipe.model
    torch.manual_seed(seed)
    teacher = create_branch(m.backbone, manifest.num_categories, m.aggregator, m.dim, image_hw=(height, width),
                            num_classes=manifest.num_categories)
    out = Path(folder) / f"teacher-{m.backbone}-{m.aggregator}{m.dim}-s{seed}-{Path(recipe.data.shards).name}"
    out.mkdir(parents=True, exist_ok=True)
    return str(save_state(out, teacher, None, None, 0, {}))


def shards(city_dir: Path, image_size: tuple[int, int], seg_model: str = "gt", shard_images: int = 250,
           tag: str = "gt") -> Path:
    """The shards of a city, built once with `structvpr data shards`'s code path (build_shards).

    Built in a child process with its own local Ray, so that the benchmark's process starts no
    Ray of its own (its raylet and workers would compete for the two cores with what is timed).
    """
    import subprocess

    out = WORK / f"shards-{Path(city_dir).name}-{image_size[0]}x{image_size[1]}-{tag}-n{shard_images}"
    if (out / "manifest.json").is_file():
        return out
    print(f"building shards {out.name} (once; later runs reuse them) ...", flush=True)
    start = time.perf_counter()
    cmd = [sys.executable, __file__, "build", str(city_dir), str(out), seg_model,
           f"{image_size[0]}x{image_size[1]}", str(shard_images)]
    subprocess.run(cmd, check=True)
    print(f"  built in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def start_local_ray() -> None:
    """A new local Ray, as `structvpr data shards` starts one (runtime.ensure_ray), but never joining a
    cluster that someone else started on this machine (ray.init() with no address would)."""
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address="local", logging_level=logging.WARNING, log_to_driver=True)


def build(city_dir: str | Path, out: str | Path, seg_model: str, image_size: tuple[int, int],
          shard_images: int = 250, workers: int = 2) -> dict:
    """build_shards("vg", ...) into `out` (replacing it), in this process; returns the manifest."""
    from structvpr.datasets.shards.build import BuildOptions, build_shards

    start_local_ray()
    opts = BuildOptions(seg_model=seg_model, image_size=tuple(image_size), shard_images=shard_images,
                        workers=workers, progress=False, overwrite=True)
    return build_shards("vg", city_dir, out, opts)


def quiet_ray_logs() -> None:
    """Ray's deprecation and auth warnings are not results: keep them out of the printed tables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("ray").setLevel(logging.ERROR)


# ---------------------------------------------------------------- memory


class TreeRSS:
    """Samples the summed memory of a process and all its descendants every `interval` s, in a thread.

    peak: summed RSS, as `ps` shows it: pages shared between processes (libraries such as libtorch,
    Ray's object store) count once per process that maps them, so it is an upper bound.
    peak_pss: summed PSS (each shared page split between the processes sharing it), from
    /proc/PID/smaps_rollup: what the tree really holds. Both are sampled at the same instants.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2):
        import psutil

        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.peak_breakdown: dict[str, int] = {}
        self.max_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return 0
        total, total_pss, by_name = 0, 0, {}
        for p in procs:
            try:
                rss, pss = _rss_pss(p)
                name = _short_name(p)
            except (psutil.Error, OSError):  # exited between listing and reading
                continue
            total += rss
            total_pss += pss
            by_name[name] = by_name.get(name, 0) + rss
        self.samples += 1
        self.max_processes = max(self.max_processes, len(procs))
        self.peak_pss = max(self.peak_pss, total_pss)
        if total > self.peak:
            self.peak, self.peak_processes, self.peak_breakdown = total, len(procs), by_name
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _rss_pss(proc) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS falls back to RSS where smaps_rollup is missing (not Linux)."""
    try:
        fields = {}
        with open(f"/proc/{proc.pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    fields[key] = int(rest.split()[0]) * 1024  # kB
        return fields["Rss"], fields["Pss"]
    except (FileNotFoundError, KeyError, ValueError):
        rss = proc.memory_info().rss
        return rss, rss


def _short_name(proc) -> str:
    """'ray::ShardBuildActor', 'raylet', 'gcs_server', 'python' ...: what a process is, for the breakdown."""
    try:
        cmd = proc.cmdline()
    except Exception:
        cmd = []
    name = proc.name()
    if cmd and cmd[0].startswith("ray::"):
        # 'ray::MapWorker(MapBatches(X)).submit' while running a task: the same actor as without '.submit'
        title = cmd[0].split()[0]
        return title[: title.rindex(")") + 1] if ")" in title else title
    for c in cmd[:3]:
        base = os.path.basename(c)
        if base.endswith(".py") or base in ("raylet", "gcs_server"):
            return base
    return name


def mib(n_bytes: float) -> float:
    return n_bytes / (1 << 20)


if __name__ == "__main__":  # python bench/common.py build CITY OUT SEG WxH SHARD_IMAGES
    if len(sys.argv) != 7 or sys.argv[1] != "build":
        sys.exit("usage: python bench/common.py build CITY OUT SEG WxH SHARD_IMAGES")
    quiet_ray_logs()
    from structvpr.cli import parse_size

    _, _, city_arg, out_arg, seg_arg, size_arg, n_arg = sys.argv
    build(city_arg, out_arg, seg_arg, parse_size(size_arg), int(n_arg))
