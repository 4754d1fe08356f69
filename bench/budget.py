"""A smaller training budget for the CPU-scale quality benchmarks (bench_ablation.py, bench_asha.py): their
recipes train 40 batches an epoch, hours of this machine per run; `--batches-per-epoch N` runs the same
recipes, city and shards at N, with `-bN[-tM]` in the names of the results so that they never mix."""

from __future__ import annotations

import argparse

# --quick: the tiny city's smoke run, students and teacher alike
QUICK = ["train.epochs=2", "data.batches_per_epoch=4", "data.places_per_batch=8"]


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """--batches-per-epoch / --teacher-batches-per-epoch: the student and teacher recipes at a smaller training
    budget than their 40 batches an epoch (a CPU-scale run of hours at a fraction of the time)."""
    p.add_argument("--batches-per-epoch", type=int,
                   help="a smaller training budget for the students (the recipes' 40 by default); "
                        "results and chart then carry -b<N> in their names")
    p.add_argument("--teacher-batches-per-epoch", type=int,
                   help="the teacher's and its fold teachers' budget (default: --batches-per-epoch's); name suffix -t<N>")


def check_budget_args(p: argparse.ArgumentParser, args) -> None:
    """After parse_args: both budgets 1 or more and not with --quick; the teacher's defaults to the students'."""
    for name in ("batches_per_epoch", "teacher_batches_per_epoch"):
        if getattr(args, name) is not None and (args.quick or getattr(args, name) < 1):
            p.error(f"--{name.replace('_', '-')} must be 1 or more, and not with --quick (which sets its own budget)")
    if args.teacher_batches_per_epoch is None:
        args.teacher_batches_per_epoch = args.batches_per_epoch


def budget_overrides(args, teacher: bool = False) -> list[str]:
    """The recipe overrides of the budget the arguments chose: --quick's, a smaller one, or none (the recipes')."""
    if args.quick:
        return QUICK
    batches = args.teacher_batches_per_epoch if teacher else args.batches_per_epoch
    return [f"data.batches_per_epoch={batches}"] if batches else []


def budget_suffix(args) -> str:
    """-quick, or -b<N>[-t<M>] for the names of a run at a smaller budget; empty at the recipes' own."""
    if args.quick:
        return "-quick"
    suffix = f"-b{args.batches_per_epoch}" if args.batches_per_epoch else ""
    return suffix + (f"-t{args.teacher_batches_per_epoch}" if args.teacher_batches_per_epoch != args.batches_per_epoch else "")
