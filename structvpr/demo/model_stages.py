"""The demo's training stages: the teacher with its fold teachers and out-of-fold ranks, the three students of
the ablation (RGB only, plain KD, weighted KD), a small sweep of the weighting, and each model on the test split."""

from __future__ import annotations

from pathlib import Path

from structvpr.demo.presets import Preset, recipe
from structvpr.demo.stages import Stages

STUDENTS = {  # name -> the student recipe's overrides; the ablation's three arms
    "rgb_only": ["kd.mode=none"],
    "plain_kd": ["kd.mode=plain"],
    "weighted_kd": ["kd.mode=weighted", "kd.ranks=out_of_fold"],
}
STUDENT_TITLES = {"rgb_only": "RGB only (no KD)", "plain_kd": "plain KD", "weighted_kd": "weighted KD (out-of-fold ranks)"}


def training_overrides(work: Path, shards: str, preset: Preset, seed: int) -> list[str]:
    return [f"data.shards={shards}", f"run.storage_path={work / 'runs'}", f"tracking.uri={tracking_uri(work)}",
            f"train.seed={seed}", *preset.train]


def tracking_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def model_stages(stages: Stages, work: Path, preset: Preset, seed: int, data: dict) -> dict:
    from structvpr.platform.jobs.launcher import run_training

    common = training_overrides(work, data["shards"], preset, seed)
    teacher = stages.run("teacher", f"teacher (segmentation branch) and {preset.folds} fold teachers with their "
                                    "out-of-fold ranks, on Ray Train",
                         lambda: run_training("teacher", recipe(preset, "teacher"), [*common, f"folds={preset.folds}"]))
    # The students and the sweep need only the teacher: they run at once, and Ray queues what does not fit.
    # Their progress bars would draw over each other: each job prints a line per epoch instead.
    at_once = {"sweep": (f"sweep of the weighting: {preset.sweep_trials} trials on Ray Tune, the best registered",
                         lambda: _sweep(common, teacher, preset))}
    for name, extra in STUDENTS.items():
        at_once[name] = (f"student: {STUDENT_TITLES[name]}, on Ray Train (at once with the sweep)",
                         lambda extra=extra: run_training("student", recipe(preset, "student"),
                                                          [*common, f"teacher={teacher['checkpoint']}", *extra],
                                                          progress=False))
    if not all(stages.is_kept(name) for name in at_once):
        from structvpr.runtime import ensure_ray

        ensure_ray()  # here, on the main thread: jobs started from threads join it (runtime.py says why)
    found = stages.run_at_once(at_once)
    students, sweep = {name: found[name] for name in STUDENTS}, found["sweep"]
    return {"teacher": teacher, "students": students, "sweep": sweep}


def _sweep(common: list[str], teacher: dict, preset: Preset) -> dict:
    from structvpr.tuning.command import run_sweep

    overrides = [*common, f"teacher={teacher['checkpoint']}", f"tune.num_samples={preset.sweep_trials}", *preset.sweep]
    return run_sweep(recipe(preset, "tune"), overrides, register_best=True)


def evaluation_stage(stages: Stages, work: Path, data: dict, models: dict) -> dict:
    return stages.run("evaluation", "every model on the test split (cross-condition queries, FAISS, exact)",
                      lambda: evaluate_all(work, data, models))


def models_to_evaluate(data: dict, models: dict) -> dict[str, tuple[str, str]]:
    """name -> (model reference, shards): the teacher on predicted and on ground-truth segmentation, then students."""
    teacher = models["teacher"]["checkpoint"]
    chosen = {"teacher_predicted_seg": (teacher, data["shards"]), "teacher_gt_seg": (teacher, data["shards_gt"])}
    chosen |= {name: (run["checkpoint"], data["shards"]) for name, run in models["students"].items()}
    if models["sweep"].get("registered_model"):
        chosen["sweep_best"] = (f"models:/structvpr-student/{models['sweep']['registered_model']}", data["shards"])
    return chosen


def evaluate_all(work: Path, data: dict, models: dict) -> dict:
    """Recall per model, and each model's top-5 per query in eval/<name>.npz (the report's retrieval grid)."""
    import numpy as np

    from structvpr.platform.evaluation.evaluate import evaluate_branch
    from structvpr.platform.store.references import load_branch

    results = {}
    (work / "eval").mkdir(exist_ok=True)
    for name, (ref, shards) in models_to_evaluate(data, models).items():
        model, _ = load_branch(ref)
        report, _, queries = evaluate_branch(model, shards, "test", "cpu", progress=False)
        np.savez(work / "eval" / f"{name}.npz", topk=report.topk[:, :5], correct=report.positives_mask[:, :5],
                 has_positive=report.has_positive, conditions=np.array(queries.conditions))
        results[name] = {"model": ref, "shards": shards, "recall": report.recall,
                         "per_condition": report.recall_per_condition, "queries": report.num_queries,
                         "queries_per_condition": report.queries_per_condition}
        print(f"   {name:<22} R@1 {report.recall[1]:5.1f}  R@5 {report.recall[5]:5.1f}  R@10 {report.recall[10]:5.1f}")
    return results
