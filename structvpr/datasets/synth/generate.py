"""Writing the dataset: render every shot in worker processes, write JPEG and label PNG atomically, summarise."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from structvpr.datasets.class_maps import CATEGORIES
from structvpr.datasets.records import DatasetError, file_in_the_way
from structvpr.datasets.synth.camera import ROLE_DIRS, Shot, traversals
from structvpr.datasets.synth.city import SPLITS, City, Props, build_city
from structvpr.datasets.synth.conditions import CONDITIONS, finish
from structvpr.datasets.synth.presets import Preset, get_preset
from structvpr.datasets.synth.render import Camera, render
from structvpr.datasets.synth.traffic import draw_traffic
from structvpr.files import write_text_atomic

JPEG_QUALITY = 90
CHUNK = 8  # shots per task: small enough to balance two workers, large enough to reuse a traversal's traffic


def generate_city(out: str | Path, preset: str = "small", seed: int = 0, image_size: tuple[int, int] | None = None,
                  workers: int = 2, progress: bool = True) -> dict:
    """Render the synthetic city into OUT in the VG layout, with exact label maps; returns the summary.

    Workers are spawned processes: a script calling this with workers > 1 needs the usual
    `if __name__ == "__main__":` guard.
    """
    cfg = get_preset(preset)
    if image_size is not None:
        cfg = replace(cfg, image_size=(int(image_size[0]), int(image_size[1])))
    out = Path(out)
    _check_arguments(out, seed, workers)
    start = time.perf_counter()
    shots = traversals(build_city(cfg, seed), cfg, seed)
    _prepare(out)
    meta = {"preset": preset, "seed": seed, "settings": cfg.to_dict(), "complete": False}
    # Written first, so that a run killed half-way is known as ours and replaced by the next run.
    write_text_atomic(out / "synth.json", json.dumps(meta, indent=1))
    _render_all(shots, cfg, seed, out, workers, progress)
    summary = _summary(shots, cfg, out, time.perf_counter() - start)
    write_text_atomic(out / "labels" / "classes.json", json.dumps({str(k): v for k, v in CATEGORIES.items()}, indent=1))
    write_text_atomic(out / "synth.json", json.dumps({**meta, "complete": True, "summary": summary}, indent=1))
    return summary


def _check_arguments(out: Path, seed: int, workers: int) -> None:
    """Everything that would fail later, checked before anything is rendered or written."""
    if seed < 0:
        raise DatasetError(f"--seed must be 0 or more, got {seed}")
    if workers < 1:
        raise DatasetError(f"--workers must be at least 1, got {workers}")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise DatasetError(f"cannot write the city to {out}: {blocker} is a file, not a folder; choose another folder")


def _is_ours(out: Path) -> bool:
    """A folder a synth run wrote: its synth.json names the preset and the seed."""
    try:
        meta = json.loads((out / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and {"preset", "seed", "settings"} <= set(meta)


def _prepare(out: Path) -> None:
    """Make the folders; a previous synthetic city in OUT is replaced, anything else there is left alone."""
    if _is_ours(out):
        for kind in ("images", "labels"):
            shutil.rmtree(out / kind, ignore_errors=True)
    elif any((out / kind).exists() for kind in ("images", "labels")):
        raise DatasetError(f"{out} already holds images/ or labels/ that no synth run wrote; choose an empty folder")
    for kind in ("images", "labels"):
        for split in SPLITS:
            for role_dir in ROLE_DIRS.values():
                (out / kind / split / role_dir).mkdir(parents=True, exist_ok=True)


def _render_all(shots: list[Shot], cfg: Preset, seed: int, out: Path, workers: int, progress: bool) -> None:
    chunks = [shots[i:i + CHUNK] for i in range(0, len(shots), CHUNK)]
    with tqdm(total=len(shots), disable=not progress, unit="img", desc="synth city", smoothing=0.1) as bar:
        if workers <= 1:
            _init(cfg, seed, str(out))
            try:
                for chunk in chunks:
                    bar.update(_render_chunk(chunk))
            finally:
                _STATE.clear()  # the caller's process keeps no city around
            return
        # spawn, not fork: the caller may hold threads (Ray, torch) that a forked child would inherit broken.
        # An executor, not a Pool: a worker that dies raises BrokenProcessPool instead of hanging the run.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(cfg, seed, str(out))) as pool:
            for done in as_completed([pool.submit(_render_chunk, chunk) for chunk in chunks]):
                bar.update(done.result())


def _summary(shots: list[Shot], cfg: Preset, out: Path, seconds: float) -> dict:
    images = {s: {"database": 0, "query": 0} for s in SPLITS}
    places = {s: 0 for s in SPLITS}
    for shot in shots:
        images[shot.split][shot.role] += 1
        places[shot.split] += shot.role == "database"
    return {
        "images": images, "places": places, "conditions": ["day", *cfg.query_conditions],
        "image_size": list(cfg.image_size), "seconds": round(seconds, 2),
        "images_per_second": round(len(shots) / max(seconds, 1e-9), 1), "out": str(out),
    }


# --- worker side -----------------------------------------------------------------------------------

_STATE: dict = {}


def _init(cfg: Preset, seed: int, out: str) -> None:
    """Each worker rebuilds the city from (preset, seed): cheaper than pickling it and identical."""
    _STATE.update(cfg=cfg, seed=seed, out=Path(out), city=build_city(cfg, seed), props={})


def _render_chunk(chunk: list[Shot]) -> int:
    for shot in chunk:
        rgb, label = render_shot(shot)
        _write(shot, rgb, label)
    return len(chunk)


def render_shot(shot: Shot) -> tuple[np.ndarray, np.ndarray]:
    """The photo (uint8 RGB) and the label map (uint8 ids) of one shot, in the worker's city."""
    cfg, seed, city = _STATE["cfg"], _STATE["seed"], _STATE["city"]
    cond = CONDITIONS[shot.condition]
    frame = render(city, _traversal_props(city, seed, shot.traversal), Camera(shot.x, shot.y, shot.yaw),
                   cond, cfg.image_size, _sky_phase(seed, shot.traversal))
    lamps = np.asarray(frame.lamps, np.float32).reshape(-1, 4)
    rng = np.random.default_rng([seed, 2, shot.place, shot.traversal])
    return finish(frame.rgb, frame.label, frame.depth, frame.emissive, lamps, cond, rng), frame.label


def _traversal_props(city: City, seed: int, traversal: int) -> Props:
    cache = _STATE["props"]
    if traversal not in cache:
        cache.clear()  # shots come ordered by traversal: one at a time is enough
        cache[traversal] = Props.concat([city.props, draw_traffic(city, seed, traversal)])
    return cache[traversal]


def _sky_phase(seed: int, traversal: int) -> list[tuple[float, float, float]]:
    """Cloud waves of one traversal: frequency, direction, phase; the sky changes between traversals."""
    rng = np.random.default_rng([seed, 4, traversal])
    return list(zip(rng.uniform(2.0, 9.0, 4), rng.uniform(0.0, np.pi, 4), rng.uniform(0.0, 2 * np.pi, 4)))


def _write(shot: Shot, rgb: np.ndarray, label: np.ndarray) -> None:
    """Label first, image last: a run killed in between leaves a label without an image, never a torn jpg."""
    out = _STATE["out"]
    _atomic_image(Image.fromarray(label), out / shot.relpath("labels", ".png"), format="PNG")
    _atomic_image(Image.fromarray(rgb), out / shot.relpath("images", ".jpg"), format="JPEG", quality=JPEG_QUALITY)


def _atomic_image(img: Image.Image, path: Path, **save_args) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, **save_args)
    os.replace(tmp, path)


