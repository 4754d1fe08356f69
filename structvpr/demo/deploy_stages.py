"""The demo's deploy stages: the best student (chosen on val) promoted to `champion` through the registry's
test-recall gate, then served: a place index beside it and test queries sent as JPEG bytes to the same pyfunc
that `mlflow models serve` runs, with the student's and the teacher path's latency per image."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from structvpr.demo.model_stages import tracking_uri
from structvpr.demo.stages import Stages

MODEL_NAME = "structvpr-student"
LATENCY_CALLS = 20  # timed single-image calls per path, after one warm-up


def deploy_stages(stages: Stages, work: Path, models: dict, data: dict, queries_served: int) -> dict:
    promotion = stages.run("promotion", "gated promotion of the best student (chosen on val R@1) to 'champion'",
                           lambda: promote_best(work, models, data["shards"]))
    served = stages.run("served", f"serving the champion: place index, {queries_served} test queries as JPEG bytes",
                        lambda: serve_champion(work, data, queries_served, promotion))
    latency = stages.run("latency", "latency per image: the student vs the teacher path (segmentation + teacher)",
                         lambda: measure_latency(work, models, data))
    return {"promotion": promotion, "served": served, "latency": latency}


def candidates(models: dict) -> list[dict]:
    """Every registered student with its best val R@1, best first (the sweep's best by its own val metric)."""
    rows = [{"name": name, "version": str(run["registered_model"]), "val_r1": run["metrics"]["best_val_recall_at_1"]}
            for name, run in models["students"].items() if run.get("registered_model")]
    sweep = models["sweep"]
    if sweep.get("registered_model") and sweep["trials"]:
        rows.append({"name": "sweep_best", "version": str(sweep["registered_model"]), "val_r1": sweep["trials"][0]["best"]})
    return sorted(rows, key=lambda r: -r["val_r1"])


def promote_best(work: Path, models: dict, shards: str) -> dict:
    from structvpr.deploy.registry.command import run_promote
    from structvpr.deploy.registry.promotion import PromotionRefused, Rules

    ranked = candidates(models)
    if not ranked:
        return {"candidates": [], "promoted": False, "reason": "no student was registered"}
    best = ranked[0]
    print(f"   best on val: {best['name']} (version {best['version']}, val R@1 {best['val_r1']:.1f})")
    try:  # evaluates it on the test split, records that on the version, then applies the gate under the lock
        run_promote(tracking_uri(work), MODEL_NAME, best["version"], Rules(), shards=shards)
        promoted, reason = True, ""
    except PromotionRefused as refused:  # a rule said no: the demo goes on and the report says why
        promoted, reason = False, str(refused)
        print(f"   {reason}")
    return {"candidates": ranked, "best": best, "promoted": promoted, "reason": reason,
            "champion": champion_version(work)}


def champion_version(work: Path) -> str | None:
    from structvpr.deploy.registry.records import CHAMPION, version_by_alias
    from structvpr.platform.store.tracking import client

    record = version_by_alias(client(tracking_uri(work)), MODEL_NAME, CHAMPION)
    return record.version if record else None


def serve_champion(work: Path, data: dict, count: int, promotion: dict) -> dict:
    """The champion's place index built and logged beside it, then queries through MLflow's pyfunc."""
    import mlflow.pyfunc
    import pandas as pd

    from structvpr.deploy.serving.commands import run_index_build

    if not promotion.get("champion"):
        return {"served": False, "reason": "no champion to serve"}
    ref = f"models:/{MODEL_NAME}@champion"
    run_index_build(ref, data["shards"], "test", str(work / "place_index"), overwrite=True, log=True, progress=False)
    served = mlflow.pyfunc.load_model(ref)  # what `mlflow models serve -m models:/structvpr-student@champion` loads
    paths = query_images(Path(data["city"]), count)
    answers = served.predict(pd.DataFrame({"image": [p.read_bytes() for p in paths]}), params={"top_k": 5})
    rows = [served_row(path, places) for path, places in zip(paths, answers["places"])]
    right = sum(r["top1_within_25m"] for r in rows)
    print(f"   {right} of {len(rows)} queries answered with a place within 25 m first")
    return {"served": True, "model": ref, "version": promotion["champion"], "queries": rows, "top1_right": right}


def query_images(city: Path, count: int) -> list[Path]:
    """`count` test queries spread over the folder (so over conditions), in name order."""
    paths = sorted((city / "images" / "test" / "queries").glob("*.jpg"))
    step = max(1, len(paths) // max(count, 1))
    return paths[::step][:count]


def served_row(path: Path, places) -> dict:
    import math

    from structvpr.datasets.vg_names import parse_vg_name

    truth = parse_vg_name(path.name)
    top = places[0]
    metres = math.hypot(top["utm_east"] - truth.utm_east, top["utm_north"] - truth.utm_north)
    return {"image": str(path), "condition": truth.note, "top1_key": top["key"], "top1_condition": top.get("condition", ""),
            "top1_score": float(top["score"]), "top1_metres": round(metres, 1), "top1_within_25m": metres <= 25.0}


def measure_latency(work: Path, models: dict, data: dict) -> dict:
    """Median milliseconds per single image: student alone vs segmentation model + teacher (same decode)."""
    from structvpr.datasets.segmentation.predictor import SegmentationPredictor
    from structvpr.deploy.serving.localizer import Localizer
    from structvpr.platform.store.references import load_branch

    blob = query_images(Path(data["city"]), 1)[0].read_bytes()
    student, trained_on = load_branch(models["students"]["weighted_kd"]["checkpoint"])
    teacher, _ = load_branch(models["teacher"]["checkpoint"])
    size = tuple(trained_on["image_size"])
    segmenter = SegmentationPredictor(data["segmentation"]["checkpoint"], device="cpu", image_size=size)
    paths = {"student": Localizer(student, size), "teacher_path": Localizer(teacher, size, segmenter=segmenter)}
    result = {name: median_ms(localizer, blob) for name, localizer in paths.items()}
    result["ratio"] = result["teacher_path"] / result["student"]
    print(f"   student {result['student']:.1f} ms, teacher path {result['teacher_path']:.1f} ms per image "
          f"({result['ratio']:.2f}x)")
    return result


def median_ms(localizer, blob: bytes) -> float:
    localizer.describe([blob])  # warm-up: first-call allocations are not serving latency
    times = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        localizer.describe([blob])
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
