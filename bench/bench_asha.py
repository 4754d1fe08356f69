"""ASHA against the same sweep without early stopping: best val R@1, epochs run and wall time, and the best trial on test.

    .venv/bin/python bench/bench_asha.py            # 12 trials each at the CPU scale (hours: run it alone)
    .venv/bin/python bench/bench_asha.py --trials 6
    .venv/bin/python bench/bench_asha.py --batches-per-epoch 5 --teacher-batches-per-epoch 10  # a smaller budget
    .venv/bin/python bench/bench_asha.py --quick    # tiny city, 3 trials of 2 epochs: checks the script runs

Both sweeps are `structvpr tune` (run_sweep) of configs/cpu/tune.yaml with the same searcher and seed, on
the shards and teacher of bench/bench_ablation.py (the small city, predicted segmentation, a teacher with
3 fold teachers and its out-of-fold ranks table: built there once and shared; a finished teacher is not
retrained). One runs ASHA (the recipe's grace period and reduction factor), the other `tune.scheduler.name=
none`: every trial to the last epoch. Each sweep registers its best trial (chosen on val R@1), which is then
evaluated on the test split beside the default weighting and plain KD (seed 0, the ablation's runs).

The target (docs/BENCHMARKS.md): ASHA's best val R@1 within 1 point of the full sweep's, for at most half
of its epochs. A sweep stopped midway resumes when the script runs again (Tune restores it); its wall time
is then that of the last call only, and the JSON says so. A sweep already in the results JSON of the same
set-up is read from there, not resumed: its wall time stays the one measured when it ran.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import budget
import common  # noqa: F401  (puts the repo on sys.path)
import bench_ablation as ablation

SCHEDULERS = ("asha", "none")
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city, 3 trials of 2 epochs (a smoke run)")
    p.add_argument("--trials", type=int, help="trials per sweep (default 12; 3 with --quick)")
    budget.add_budget_args(p)
    p.add_argument("--out", help="JSON results (default bench/results/asha[-b<N>].json)")
    p.add_argument("--plot", help="chart (default docs/asha[-b<N>].png; 'none': no chart, the default with --quick)")
    args = p.parse_args(argv)
    args.trials = args.trials or (3 if args.quick else 12)
    if args.trials < 2:
        p.error("--trials must be 2 or more: ASHA stops trials by comparing them")
    budget.check_budget_args(p, args)
    return args


def shared_setup(args) -> tuple[Path, Path, str]:
    """The ablation's shards, run folder and teacher (with its ranks table), built there once; a teacher of
    another budget is another run (the run name hashes the recipe), so it never replaces the ablation's."""
    setup = ablation.parse_args(["--seg-model", "gt" if args.quick else "predicted", *(["--quick"] if args.quick else [])])
    shards, folder = ablation.prepare(setup)
    teacher_budget = budget.budget_overrides(args, teacher=True)
    teacher = ablation.train("teacher", shards, folder, [*teacher_budget, f"folds={setup.folds}"])
    return shards, folder, teacher["checkpoint"]


def run_one_sweep(scheduler: str, args, shards: Path, folder: Path, teacher: str) -> dict:
    from structvpr.tuning.command import run_sweep

    grace = ["tune.scheduler.grace_period=1"] if args.quick else []
    overrides = [f"teacher={teacher}", f"data.shards={shards}", f"run.storage_path={folder / 'runs'}",
                 f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", f"tracking.experiment=bench-asha-{scheduler}",
                 f"tune.num_samples={args.trials}", f"tune.scheduler.name={scheduler}", *grace,
                 *budget.budget_overrides(args)]
    started = time.perf_counter()
    result = run_sweep(str(REPO / "configs/cpu/tune.yaml"), overrides, register_best=True)
    wall = time.perf_counter() - started
    rows = result["trials"]
    print(f"  sweep {scheduler}: {wall:.0f} s", flush=True)
    return {"sweep": result["sweep"], "wall_s": round(wall, 1), "trials": rows,
            "epochs_run": sum(r["epochs"] for r in rows), "best_val_r1": rows[0]["best"],
            "stopped": sum(r["status"] == "stopped" for r in rows), "failed": sum(r["status"] == "error" for r in rows),
            "registered_version": result["registered_model"]}


def best_trial_on_test(version, shards: Path, folder: Path) -> dict | None:
    if version is None:
        return None
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"  # where models:/ is looked up
    return ablation.test_recall(f"models:/structvpr-student/{version}", shards)


def baselines(shards: Path, folder: Path, teacher: str, overrides: list[str]) -> dict:
    """Test recall of the default weighting (out-of-fold ranks) and plain KD, seed 0: the ablation's runs,
    trained here if the ablation has not (a finished run is read back, not retrained)."""
    found = {}
    for mode in ("weighted-oof", "plain"):
        extra = [*overrides, *ablation.MODES[mode], "train.seed=0", f"teacher={teacher}"]
        student = ablation.train("student", shards, folder, extra)
        found[mode] = ablation.test_recall(student["checkpoint"], shards)
        found[mode]["val_r1"] = student["metrics"]["best_val_recall_at_1"]
    return found


def main(argv=None):
    args = parse_args(argv)
    print(common.machine_line())
    shards, folder, teacher = shared_setup(args)
    out = Path(args.out or REPO / f"bench/results/asha{budget.budget_suffix(args)}.json")
    results = {"setup": {"shards": shards.name, "trials": args.trials, "quick": args.quick,
                         "budget_overrides": budget.budget_overrides(args),
                         "teacher_budget_overrides": budget.budget_overrides(args, teacher=True)}, "sweeps": {}}
    done = finished_sweeps(out, results["setup"])
    for scheduler in SCHEDULERS:
        if scheduler in done:
            print(f"  sweep {scheduler}: read from {out} (finished earlier)", flush=True)
            results["sweeps"][scheduler] = done[scheduler]
            continue
        sweep = run_one_sweep(scheduler, args, shards, folder, teacher)
        sweep["best_trial_test"] = best_trial_on_test(sweep["registered_version"], shards, folder)
        results["sweeps"][scheduler] = sweep
        out.write_text(json.dumps(results, indent=1, default=str))  # an interrupted benchmark keeps what finished
    results["baselines"] = baselines(shards, folder, teacher, budget.budget_overrides(args))
    results["comparison"] = compare(results["sweeps"])
    out.write_text(json.dumps(results, indent=1, default=str))
    print_results(results)
    if args.plot != "none" and (not args.quick or args.plot):
        plot(results["sweeps"], Path(args.plot or REPO / f"docs/asha{budget.budget_suffix(args)}.png"))
    print(f"results: {out}")
    return results


def finished_sweeps(out: Path, setup: dict) -> dict:
    """The sweeps an earlier call of the same set-up wrote to the results JSON: a second call only runs what
    is missing (restoring a finished sweep through Tune would overwrite its wall time with the restore's)."""
    if not out.exists():
        return {}
    # JSON made the recall@N keys strings; the rest of the script indexes them by N
    earlier = json.loads(out.read_text(), object_hook=lambda d: {int(k) if k.isdigit() else k: v for k, v in d.items()})
    return earlier.get("sweeps", {}) if earlier.get("setup") == setup else {}


def compare(sweeps: dict) -> dict:
    asha, full = sweeps["asha"], sweeps["none"]
    epochs_ratio = asha["epochs_run"] / full["epochs_run"] if full["epochs_run"] else float("nan")
    val_gap = full["best_val_r1"] - asha["best_val_r1"]
    return {"epochs_ratio": epochs_ratio, "wall_ratio": asha["wall_s"] / full["wall_s"] if full["wall_s"] else float("nan"),
            "val_gap": val_gap, "target_met": bool(val_gap <= 1.0 and epochs_ratio <= 0.5)}


def print_results(results: dict) -> None:
    rows = []
    for name, s in results["sweeps"].items():
        test = s["best_trial_test"]["overall"][1] if s["best_trial_test"] else float("nan")
        rows.append([name, len(s["trials"]), s["stopped"], s["failed"], s["epochs_run"], f"{s['wall_s']:.0f}",
                     f"{s['best_val_r1']:.1f}", f"{test:.1f}"])
    for mode, b in results["baselines"].items():
        rows.append([f"{mode} (defaults, seed 0)", "", "", "", "", "", f"{b['val_r1']:.1f}", f"{b['overall'][1]:.1f}"])
    common.print_table(["sweep", "trials", "stopped", "failed", "epochs run", "wall s", "best val R@1", "test R@1"],
                       rows, title="ASHA against every trial to the end (same searcher and seed); the best trial on test")
    c = results["comparison"]
    print(f"ASHA / full: epochs {c['epochs_ratio']:.2f}, wall time {c['wall_ratio']:.2f}; best val R@1 full minus ASHA "
          f"{c['val_gap']:+.1f} -> target (gap <= 1 point, epochs <= half) {'met' if c['target_met'] else 'NOT met'}")


def plot(sweeps: dict, path: Path) -> None:
    """Each trial's best val R@1 against the epochs it ran, one marker per scheduler."""
    from structvpr.platform.evaluation.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (name, s), marker in zip(sweeps.items(), "o^"):
        ax.scatter([r["epochs"] for r in s["trials"]], [r["best"] for r in s["trials"]], marker=marker, alpha=0.7,
                   label=f"{'ASHA' if name == 'asha' else 'no early stopping'}: {s['epochs_run']} epochs, "
                         f"best {s['best_val_r1']:.1f}")
    ax.set(xlabel="epochs the trial ran", ylabel="best val R@1 (%)", title="trials of the two sweeps")
    ax.legend(fontsize=8)
    _save(fig, path)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
