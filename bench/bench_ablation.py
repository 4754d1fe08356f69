"""Ablation at CPU scale: the RGB student without KD, with plain KD, and with StructVPR's weighted KD whose
teacher ranks come from the teacher's own training gallery (in-fold) or from fold teachers (out-of-fold).

    .venv/bin/python bench/bench_ablation.py --seg-model predicted        # the issue's setting (~90 min)
    .venv/bin/python bench/bench_ablation.py                              # ground-truth segmentation
    .venv/bin/python bench/bench_ablation.py --seeds 0 --modes plain,weighted-oof
    .venv/bin/python bench/bench_ablation.py --quick                      # tiny city, a few steps: checks the script runs
    .venv/bin/python bench/bench_ablation.py --seg-model predicted --modes none   # RGB only: no teacher is trained
    .venv/bin/python bench/bench_ablation.py --seg-model predicted --batches-per-epoch 5 \
        --teacher-batches-per-epoch 10                                    # an eighth of the budget (results *-b5-t10*)
    .venv/bin/python bench/bench_ablation.py --seg-model predicted --seeds 0 --modes weighted-oof \
        --set kd.weighting.noisy_rank=40 --tag n40                        # a variant, stored as weighted-oof+n40

One teacher recipe (configs/cpu/teacher.yaml: resnet18 + GeM on the one-hot categories) is trained on
the shards of the small synthetic city at 80x60 with `folds=K` (--folds, default 3): the full teacher,
K spatial fold teachers and the out-of-fold ranks table, as `structvpr train teacher ... folds=K` does.
Then the student recipe (configs/cpu/student.yaml) runs once per mode and seed with everything else
equal:
    none          kd.mode=none (RGB only)
    plain         kd.mode=plain
    weighted-in   kd.mode=weighted kd.ranks=in_fold     (r_T from the full teacher over its training gallery)
    weighted-oof  kd.mode=weighted kd.ranks=out_of_fold (r_T from the ranks table)
    weighted-oof-folds  as weighted-oof, KD targets from the fold teachers (kd.teacher_source=folds; not run
                  by default)
Each model is evaluated on the test split (cross-condition queries against the day database, positives
within 25 m), overall and per condition, with the jobs' own code. It prints mean and standard
deviation per mode, the paired per-seed difference weighted-oof minus plain, the student's R@1 as a
share of the teacher's, and the weighting groups per condition; it writes JSON (after every run, so
an interrupted ablation keeps what finished; runs of other modes or seeds already in the file are kept,
so modes can be added later) and a bar chart. Runs go to bench/results/work/ablation*/;
a finished run is not retrained, so a second call only evaluates.

--seg-model predicted first trains a segmentation model on the city (`seg train`'s code, --seg-epochs
epochs at its default size) and builds the shards with its predictions: the teacher then reads
imperfect segmentation, as on real data.

A quality check of the method, not a speed benchmark: it prints recall, not ratios.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import budget
import common  # noqa: E402  (puts the repo on sys.path)

from structvpr.cli import parse_size

MODES = {"none": ["kd.mode=none"], "plain": ["kd.mode=plain"],
         "weighted-in": ["kd.mode=weighted", "kd.ranks=in_fold"],
         "weighted-oof": ["kd.mode=weighted", "kd.ranks=out_of_fold"],
         "weighted-oof-folds": ["kd.mode=weighted", "kd.ranks=out_of_fold", "kd.teacher_source=folds"]}
DEFAULT_MODES = ("none", "plain", "weighted-in", "weighted-oof")
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city, 2 epochs of 4 batches (a smoke run)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of student seeds")
    p.add_argument("--size", default="80x60", help="WxH of the shards")
    p.add_argument("--folds", type=int, default=3, help="fold teachers of the out-of-fold ranks")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--seg-model", default="gt", choices=["gt", "predicted"],
                   help="segmentation in the shards: the labels (gt) or a model trained here (predicted)")
    p.add_argument("--seg-epochs", type=int, default=4, help="epochs of the segmentation model (--seg-model predicted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a student recipe override for every run of this call (repeatable), e.g. kd.weighting.noisy_rank=40")
    budget.add_budget_args(p)
    p.add_argument("--tag", help="name for the --set variant: results go under MODE+TAG (needed with --set)")
    p.add_argument("--out", help="JSON results (default bench/results/ablation-<seg>.json)")
    p.add_argument("--plot", help="bar chart (default docs/ablation-<seg>.png); 'none': no chart, the default with "
                   "--quick (a probe of one mode would otherwise replace the chart of the whole ablation)")
    args = p.parse_args(argv)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"unknown --modes {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    if args.set and not args.tag:
        p.error("--set needs --tag: the variant must not be stored under the plain mode's name")
    budget.check_budget_args(p, args)
    return args


def train(kind: str, shards, folder, extra: list[str]) -> dict:
    from structvpr.platform.jobs.launcher import run_training

    overrides = [f"data.shards={shards}", f"run.storage_path={folder / 'runs'}",
                 f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", *extra]
    started = time.perf_counter()
    summary = run_training(kind, f"configs/cpu/{kind}.yaml", overrides, progress=True)
    print(f"  {kind} {' '.join(extra)}: {time.perf_counter() - started:.0f} s", flush=True)
    return summary


def test_recall(checkpoint: str, shards) -> dict:
    from structvpr.platform.evaluation.evaluate import evaluate_branch
    from structvpr.platform.store.references import load_branch

    model, _ = load_branch(checkpoint, "cpu")
    report, _, _ = evaluate_branch(model, str(shards), "test", "cpu")
    return {"overall": report.recall, "conditions": {c: r[1] for c, r in report.recall_per_condition.items()},
            "no_positive": report.num_without_positives}


def group_history(folder: Path, run_id: str) -> dict[str, list[float]]:
    """Every group_* metric of a student run, by epoch."""
    from structvpr.platform.store.tracking import client

    c = client(f"sqlite:///{folder / 'mlflow.db'}")
    keys = [k for k in c.get_run(run_id).data.metrics if k.startswith("group_")]
    return {k: [m.value for m in sorted(c.get_metric_history(run_id, k), key=lambda m: m.step)] for k in sorted(keys)}


def main(argv=None):
    args = parse_args(argv)
    print(common.machine_line())
    shards, folder = prepare(args)
    short, teacher_short = budget.budget_overrides(args), budget.budget_overrides(args, teacher=True)
    name = f"ablation-{args.seg_model}{budget.budget_suffix(args)}"
    out = Path(args.out or REPO / f"bench/results/{name}.json")
    modes = args.modes.split(",")
    setup = {"shards": shards.name, "folds": args.folds, "seg_model": args.seg_model}
    if not args.quick and (short or teacher_short):  # another ablation (JSON of the recipes' budget still matches)
        setup |= {"budget": short, "teacher_budget": teacher_short}
    results = {"setup": setup, "teacher": None, "ranks": None, "students": {}} | earlier_results(out, setup)
    teacher_ref = []
    if set(modes) != {"none"}:  # RGB only reads no teacher: an hour saved without one
        teacher = train("teacher", shards, folder, [*teacher_short, f"folds={args.folds}"])
        results |= {"teacher": test_recall(teacher["checkpoint"], shards), "ranks": teacher["ranks_summary"]}
        teacher_ref = [f"teacher={teacher['checkpoint']}"]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in modes:
            extra = [*short, *MODES[mode], *args.set, f"train.seed={seed}", *teacher_ref]
            student = train("student", shards, folder, extra)
            record = test_recall(student["checkpoint"], shards)
            record["val_r1"] = student["metrics"]["best_val_recall_at_1"]
            record["groups"] = group_history(folder, student["mlflow_run_id"])
            results["students"].setdefault(f"{mode}+{args.tag}" if args.tag else mode, {})[str(seed)] = record
            out.write_text(json.dumps(results, indent=1))  # after every run: an interrupted ablation keeps it
    summary = summarize(results)
    results["summary"] = summary
    out.write_text(json.dumps(results, indent=1))
    print_results(results, summary)
    if args.plot != "none" and (not args.quick or args.plot):
        plot(results, summary, Path(args.plot or REPO / f"docs/{name}.png"))
    print(f"results: {out}")
    return results


def earlier_results(out: Path, setup: dict) -> dict:
    """The teacher, its ranks and the students already in `out` from the same setup (shards, folds,
    segmentation): kept, not rerun (a teacher-free call keeps the teacher an earlier call measured)."""
    if not out.is_file():
        return {}
    earlier = json.loads(out.read_text())
    if earlier.get("setup") != setup:
        return {}
    students = earlier.get("students", {})
    records = [record for by_seed in students.values() for record in by_seed.values()] + [earlier.get("teacher")]
    for record in filter(None, records):
        record["overall"] = {int(n): v for n, v in record["overall"].items()}  # JSON made the ranks strings
    return {"teacher": earlier.get("teacher"), "ranks": earlier.get("ranks"), "students": students}


def prepare(args) -> tuple[Path, Path]:
    """The shards (built once) and the folder of this ablation's runs."""
    size = parse_size(args.size)
    city = common.bench_city(args.quick)
    if args.seg_model == "predicted":
        checkpoint = segmentation_model(city, args.seg_epochs)
        shards = common.shards(city, size, seg_model=str(checkpoint), tag=f"pred{args.seg_epochs}")
    else:
        shards = common.shards(city, size)
    folder = common.WORK / (("ablation-quick" if args.quick else "ablation") + ("-pred" if args.seg_model == "predicted" else ""))
    print(f"city {city.name}, shards {shards.name}, runs under {folder}")
    return shards, folder


def segmentation_model(city, epochs: int):
    """A `seg train` checkpoint for this city at seg train's default size (160x128), trained once and reused;
    the shard builder resizes the 80x60 shard images to it and the predictions back."""
    from structvpr.datasets.segmentation.train import train_segmentation

    path = common.WORK / f"seg-trained-{city.name}-e{epochs}.pt"
    if not path.is_file():
        summary = train_segmentation(city, path, epochs=epochs, progress=True)
        print(f"segmentation model: val mIoU {summary['val_miou']:.3f} after {epochs} epochs -> {path}", flush=True)
    return path


def summarize(results: dict) -> dict:
    """Mean and standard deviation per mode, the paired difference weighted-oof - plain, share of the teacher."""
    teacher_r1 = results["teacher"]["overall"][1] if results["teacher"] else None
    out = {"teacher_r1": teacher_r1, "modes": {}}
    for mode, by_seed in results["students"].items():
        r1 = [r["overall"][1] for r in by_seed.values()]
        conditions = {c: statistics.mean(r["conditions"][c] for r in by_seed.values())
                      for c in next(iter(by_seed.values()))["conditions"]}
        out["modes"][mode] = {"seeds": len(r1), "r1_mean": statistics.mean(r1), "r1_std": _std(r1),
                              "r5_mean": statistics.mean(r["overall"][5] for r in by_seed.values()),
                              "share_of_teacher": statistics.mean(r1) / teacher_r1 if teacher_r1 else None,
                              "conditions_r1": conditions, "last_epoch_groups": _last_groups(by_seed)}
    plain, oof = results["students"].get("plain", {}), results["students"].get("weighted-oof", {})
    paired = {s: oof[s]["overall"][1] - plain[s]["overall"][1] for s in plain if s in oof}
    out["oof_minus_plain"] = {"per_seed": paired, "mean": statistics.mean(paired.values()) if paired else None,
                              "std": _std(list(paired.values()))}
    return out


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _last_groups(by_seed: dict) -> dict:
    """Group counts of the last epoch, summed over seeds (weighted modes only)."""
    total = {}
    for record in by_seed.values():
        for key, values in record.get("groups", {}).items():
            total[key] = total.get(key, 0) + (values[-1] if values else 0)
    return total


def print_results(results: dict, summary: dict) -> None:
    conditions = query_conditions(results)
    teacher, rows = results["teacher"], []
    if teacher:
        rows.append(["teacher", f"{teacher['overall'][1]:.1f}", "", f"{teacher['overall'][5]:.1f}", "",
                     *(f"{teacher['conditions'][c]:.1f}" for c in conditions)])
    for mode, s in summary["modes"].items():
        share = f"{100 * s['share_of_teacher']:.0f}%" if s["share_of_teacher"] is not None else "-"
        rows.append([f"{mode} ({s['seeds']} seeds)", f"{s['r1_mean']:.1f}", f"{s['r1_std']:.1f}", f"{s['r5_mean']:.1f}",
                     share, *(f"{s['conditions_r1'][c]:.1f}" for c in conditions)])
    common.print_table(["model", "R@1", "sd", "R@5", "of teacher", *(f"{c} R@1" for c in conditions)], rows,
                       title="test split: recall@N (%), mean over seeds; cross-condition queries vs the day database")
    diff = summary["oof_minus_plain"]
    if diff["per_seed"]:
        print("weighted-oof - plain, R@1 per seed: " + ", ".join(f"seed {s}: {d:+.1f}" for s, d in diff["per_seed"].items())
              + f"; mean {diff['mean']:+.1f} (sd {diff['std']:.1f})")
    if results["ranks"]:
        print_ranks(results["ranks"])


def query_conditions(results: dict) -> list[str]:
    """The test queries' conditions, from the teacher's record or, without a teacher, a student's."""
    record = results["teacher"] or next(iter(next(iter(results["students"].values())).values()))
    return sorted(record["conditions"])


def print_ranks(ranks: dict) -> None:
    rows = [[c, v["views"], f"{100 * v['r1']:.1f}", f"{100 * v['noisy']:.1f}"] for c, v in ranks.items()]
    common.print_table(["condition", "views", "r_T = 1 (%)", "noisy: r_T > noisy_rank (%)"], rows,
                       title="out-of-fold ranks table (fold teachers on the training views)")


def plot(results: dict, summary: dict, path: Path) -> None:
    """Mean test R@1 per mode with its standard deviation, overall and per condition; the teacher as a line."""
    from structvpr.platform.evaluation.plots import _save, plt

    modes = list(summary["modes"])
    conditions = query_conditions(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 2.4]})
    means = [summary["modes"][m]["r1_mean"] for m in modes]
    left.bar(modes, means, yerr=[summary["modes"][m]["r1_std"] for m in modes], capsize=4, color="#4c72b0")
    if summary["teacher_r1"] is not None:  # no teacher when only RGB-only students were asked for
        left.axhline(summary["teacher_r1"], color="#c44e52", ls="--", label="teacher (segmentation)")
        left.legend(loc="lower right", fontsize=8)
    left.set(ylabel="test R@1 (%)", title="overall (mean ± sd over seeds)")
    plt.setp(left.get_xticklabels(), rotation=30, ha="right")  # mode names are long enough to overlap
    fig.subplots_adjust(bottom=0.24, wspace=0.25)
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        values = [summary["modes"][mode]["conditions_r1"][c] for c in conditions]
        right.bar([j + i * width for j in range(len(conditions))], values, width, label=mode)
    right.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(conditions))], conditions)
    right.set(ylabel="test R@1 (%)", title="per query condition (mean over seeds)")
    right.legend(fontsize=8)
    _save(fig, path)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
