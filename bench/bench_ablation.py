"""Ablation at CPU scale: the RGB student without KD, with plain KD and with StructVPR's weighted KD.

    .venv/bin/python bench/bench_ablation.py                 # small city, 80x60 shards, configs/cpu recipes (~30-40 min)
    .venv/bin/python bench/bench_ablation.py --seeds 0,1     # each student recipe with two seeds
    .venv/bin/python bench/bench_ablation.py --quick         # tiny city, a few steps: checks the script runs
    .venv/bin/python bench/bench_ablation.py --seg-model predicted --modes plain,weighted
                                                             # shards with predicted segmentation (see below)

One teacher (configs/cpu/teacher.yaml: resnet18 + GeM on the one-hot categories) is trained on the
shards of the small synthetic city at 80x60 (ground-truth labels as segmentation), then the student
recipe (configs/cpu/student.yaml) once per kd.mode with everything else equal: same seed, same
steps, same data. Each model is evaluated on the test split (cross-condition queries against the
day database, positives within 25 m), overall and per condition, through the jobs' own code
(`run_training`, then `load_branch` + `evaluate_branch` as `structvpr eval` does). Runs go to
bench/results/work/ablation/ (checkpoints, an sqlite MLflow store); a finished run is not retrained
(the jobs' stable run names), so a second call only evaluates.

--seg-model predicted first trains a segmentation model on the city (`seg train`'s code and
default size, --seg-epochs epochs) and builds the shards with its predictions instead of the labels:
the teacher then reads imperfect segmentation, as it would on real data, which is what gives the
noisy group of the weighting something to hold.

This is a quality check of the method, not a speed benchmark: it prints recall, not ratios.
"""

from __future__ import annotations

import json
import time

import common  # noqa: E402  (puts the repo on sys.path)

from structvpr.cli import parse_size

MODES = ("none", "plain", "weighted")


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--quick", action="store_true", help="tiny city, 2 epochs of 4 batches (a smoke run)")
    p.add_argument("--seeds", default="0", help="comma list of student seeds")
    p.add_argument("--size", default="80x60", help="WxH of the shards")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of kd.mode values for the students")
    p.add_argument("--seg-model", default="gt", choices=["gt", "predicted"],
                   help="segmentation in the shards: the labels (gt) or a model trained here (predicted)")
    p.add_argument("--seg-epochs", type=int, default=4, help="epochs of the segmentation model (--seg-model predicted)")
    return p.parse_args(argv)


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
    return {"overall": report.recall, "conditions": report.recall_per_condition,
            "no_positive": report.num_without_positives}


def main(argv=None):
    args = parse_args(argv)
    size = parse_size(args.size)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(common.machine_line())
    city = common.bench_city(args.quick)
    if args.seg_model == "predicted":
        checkpoint = segmentation_model(city, args.seg_epochs)
        shards = common.shards(city, size, seg_model=str(checkpoint), tag=f"pred{args.seg_epochs}")
    else:
        shards = common.shards(city, size)
    folder = common.WORK / (("ablation-quick" if args.quick else "ablation") + ("-pred" if args.seg_model == "predicted" else ""))
    short = ["train.epochs=2", "data.batches_per_epoch=4", "data.places_per_batch=8"] if args.quick else []
    print(f"city {city.name}, shards {shards.name}, runs under {folder}")

    teacher = train("teacher", shards, folder, short)
    results = {"teacher": test_recall(teacher["checkpoint"], shards)}
    for seed in seeds:
        for mode in args.modes.split(","):
            extra = [*short, f"kd.mode={mode}", f"train.seed={seed}"] + ([f"teacher={teacher['checkpoint']}"])
            student = train("student", shards, folder, extra)
            results[f"student kd={mode} seed={seed}"] = test_recall(student["checkpoint"], shards)
    print_results(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


def segmentation_model(city, epochs: int):
    """A `seg train` checkpoint for this city at seg train's default size (160x128), trained once and reused;
    the shard builder resizes the 80x60 shard images to it and the predictions back."""
    from structvpr.datasets.segmentation.train import train_segmentation

    path = common.WORK / f"seg-trained-{city.name}-e{epochs}.pt"
    if not path.is_file():
        summary = train_segmentation(city, path, epochs=epochs, progress=True)
        print(f"segmentation model: val mIoU {summary['val_miou']:.3f} after {epochs} epochs -> {path}", flush=True)
    return path


def print_results(results: dict) -> None:
    conditions = sorted({c for r in results.values() for c in r["conditions"]})
    rows = []
    for name, r in results.items():
        rows.append([name, f"{r['overall'][1]:.1f}", f"{r['overall'][5]:.1f}",
                     *(f"{r['conditions'][c][1]:.1f}" for c in conditions)])
    common.print_table(["model", "R@1", "R@5", *(f"{c} R@1" for c in conditions)], rows,
                       title="test split: recall@N (%), cross-condition queries vs the day database")


if __name__ == "__main__":
    main()
