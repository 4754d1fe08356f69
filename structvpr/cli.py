"""The `structvpr` command: one subcommand per area of the platform, each a thin call into its package."""

from __future__ import annotations

import argparse
import json
import sys

from structvpr.config import ConfigError
from structvpr.datasets.records import DatasetError


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240 (width x height), got {text!r}") from None


def cmd_data_synth(args) -> int:
    from structvpr.datasets.synth import generate_city

    summary = generate_city(args.out, preset=args.preset, seed=args.seed, image_size=args.size,
                            workers=args.workers, progress=not args.quiet)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_data_shards(args) -> int:
    from structvpr.datasets.shards.build import BuildOptions, build_shards
    from structvpr.datasets.shards.manifest import print_build_summary

    opts = BuildOptions(
        seg_model=args.seg_model, image_size=args.size, images_per_place=args.images_per_place,
        shard_images=args.shard_images, splits=tuple(args.splits) if args.splits else None,
        workers=args.workers, overwrite=args.overwrite, progress=not args.quiet, place_radius_m=args.place_radius,
    )
    manifest = build_shards(args.format, args.root, args.out, opts)
    print_build_summary(manifest, args.out)
    return 0


def cmd_data_verify(args) -> int:
    from structvpr.datasets.shards.verify import verify_shards

    report = verify_shards(args.dir, decode=not args.no_decode, progress=not args.quiet)
    for problem in report.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    print(f"verify {args.dir}: {status}: {report.shards} shards, {report.samples} samples, {report.images} images")
    return 0 if report.ok else 1


def cmd_seg_train(args) -> int:
    from structvpr.datasets.segmentation.train import train_segmentation
    from structvpr.datasets.segmentation.train_config import SegTrainConfig

    try:
        config = SegTrainConfig(epochs=args.epochs, image_size=args.size, batch_size=args.batch_size, arch=args.arch,
                                encoder=args.encoder, lr=args.lr, seed=args.seed, max_steps=args.max_steps)
    except ValueError as exc:
        raise ConfigError(f"seg train: {exc}") from None
    metrics = train_segmentation(args.data, args.out, config, progress=not args.quiet)
    print(json.dumps(metrics, indent=1))
    return 0


def cmd_train(args) -> int:
    from structvpr.platform.jobs.launcher import run_training

    summary = run_training(args.kind, args.config, args.overrides, progress=not args.quiet)
    recalls = {str(n): round(v, 1) for n, v in summary["recall"].items()}
    best = f" (best checkpoint: epoch {summary['best_epoch']})" if "best_epoch" in summary else ""  # older summaries
    print(f"run {summary['run_name']} (MLflow {summary['mlflow_run_id']}): {summary['epochs']} epochs{best}, "
          f"best recall@N {recalls}, registered version {summary['registered_model']}")
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def cmd_eval(args) -> int:
    from structvpr.platform.evaluation.command import run_eval

    return run_eval(args.model, args.shards, split=args.split, radius_m=args.radius, out=args.out,
                    progress=not args.quiet)


def cmd_tune(args) -> int:
    from structvpr.tuning.command import SweepInterrupted, run_sweep

    try:
        summary = run_sweep(args.config, args.overrides, register_best=args.register_best, progress=not args.quiet)
    except SweepInterrupted as interrupted:  # Ctrl-C: saved for a resume, not an error of the user's input
        print(f"structvpr: {interrupted}", file=sys.stderr)
        return 130  # the shell's status for a command ended by SIGINT
    return 0 if any(row["status"] != "error" for row in summary["trials"]) else 1


def add_train_commands(sub) -> None:
    train = sub.add_parser("train", help="train on Ray Train: the segmentation teacher or the RGB student")
    train.add_argument("kind", choices=["teacher", "student"])
    train.add_argument("--config", required=True, help="recipe YAML (see configs/)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe keys, dotted: train.epochs=3")
    train.set_defaults(func=cmd_train)
    ev = sub.add_parser("eval", help="recall@N of a model on eval shards (FAISS, exact)")
    ev.add_argument("--model", required=True, help="checkpoint folder or state.pt, runs:/<id>/model, models:/<name>@<alias>")
    ev.add_argument("--shards", required=True)
    ev.add_argument("--split", default="test")
    ev.add_argument("--radius", type=float, default=25.0, help="positives within this many metres (default 25)")
    ev.add_argument("--out", default=None, help="folder for the recall plot, retrieval grid and metrics.json")
    ev.set_defaults(func=cmd_eval)
    tune = sub.add_parser("tune", help="Ray Tune sweep of a student recipe's tune: section (ASHA, MLflow parent run)")
    tune.add_argument("--config", required=True, help="sweep recipe YAML: a student recipe with tune: (configs/*/tune.yaml)")
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="recipe and tune.* keys: tune.num_samples=3")
    tune.add_argument("--register-best", action="store_true",
                      help="register the best trial's model as a new structvpr-student version tagged with the sweep")
    tune.set_defaults(func=cmd_tune)


def cmd_registry_list(args) -> int:
    from structvpr.deploy.registry.command import run_list

    return run_list(registry_uri(args.tracking_uri), args.name)


def cmd_registry_show(args) -> int:
    from structvpr.deploy.registry.command import run_show

    return run_show(registry_uri(args.tracking_uri), args.ref)


def cmd_registry_promote(args) -> int:
    from structvpr.deploy.registry.command import run_promote
    from structvpr.deploy.registry.promotion import Rules

    if args.evaluate != bool(args.shards):
        return fail("--evaluate and --shards DIR go together: evaluate on the test split of those shards first")
    return run_promote(registry_uri(args.tracking_uri), args.name, args.version, Rules(args.margin, args.floor),
                       args.shards, args.lock_timeout, args.lock_ttl)


def cmd_registry_rollback(args) -> int:
    from structvpr.deploy.registry.command import run_rollback

    return run_rollback(registry_uri(args.tracking_uri), args.name, args.lock_timeout, args.lock_ttl)


def registry_uri(option: str | None) -> str:
    from structvpr.platform.store.tracking import resolve_tracking_uri as resolve

    return resolve(option or "")


def add_registry_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument("--lock-timeout", type=float, default=120.0,
                         help="seconds to wait for another promotion of the model (default 120)")
    locking.add_argument("--lock-ttl", type=float, default=600.0,
                         help="a promotion lock older than this many seconds is stale and taken over (default 600)")
    registry = sub.add_parser("registry", help="MLflow registry: list, show, gated promotion of the champion, rollback")
    cmds = registry.add_subparsers(dest="registry_cmd", required=True)
    ls = cmds.add_parser("list", parents=[common], help="versions with aliases, test recall, manifest, source run")
    ls.add_argument("--name", default=None, help="only this registered model")
    ls.set_defaults(func=cmd_registry_list)
    show = cmds.add_parser("show", parents=[common], help="one version in full, with its promotion history")
    show.add_argument("ref", help="NAME@ALIAS or NAME/VERSION, e.g. structvpr-student@champion")
    show.set_defaults(func=cmd_registry_show)
    promote = cmds.add_parser("promote", parents=[common, locking],
                              help="move the champion alias if the version beats the champion (exit 2 if refused)")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--margin", type=float, default=0.5,
                         help="test R@1 points the candidate must gain over the champion (default 0.5)")
    promote.add_argument("--floor", type=float, default=1.0, help="test R@1 the first champion must reach (default 1.0)")
    promote.add_argument("--evaluate", action="store_true",
                         help="evaluate on the test split of --shards first and record it on the version")
    promote.add_argument("--shards", default=None, help="shards whose test split --evaluate uses")
    promote.set_defaults(func=cmd_registry_promote)
    back = cmds.add_parser("rollback", parents=[common, locking], help="swap the champion and previous aliases")
    back.add_argument("name")
    back.set_defaults(func=cmd_registry_rollback)


def cmd_index_build(args) -> int:
    from structvpr.deploy.serving.commands import run_index_build

    return run_index_build(args.model, args.shards, args.split, args.out, args.overwrite, not args.no_log,
                           progress=not args.quiet)


def cmd_localize(args) -> int:
    from structvpr.deploy.serving.commands import run_localize

    if args.top_k < 1:
        return fail(f"--top-k must be at least 1, got {args.top_k}")
    return run_localize(args.model, args.index, args.images, args.top_k, args.out, args.format, progress=not args.quiet)


def add_serving_commands(sub) -> None:
    index = sub.add_parser("index", help="place indexes for serving").add_subparsers(dest="index_cmd", required=True)
    build = index.add_parser("build", help="a place index (FAISS + coordinates + keys) of a database split, "
                                           "logged beside an MLflow model")
    build.add_argument("--model", required=True, help="runs:/<id>/model, models:/<name>@<alias>, or a checkpoint")
    build.add_argument("--shards", required=True, help="shards whose database images are the places")
    build.add_argument("--split", default="test", help="split whose database is indexed (default test)")
    build.add_argument("--out", default="place_index", help="folder to write the index to (default ./place_index)")
    build.add_argument("--overwrite", action="store_true", help="replace a place index already in --out")
    build.add_argument("--no-log", action="store_true", help="do not log the index beside an MLflow model")
    build.set_defaults(func=cmd_index_build)
    loc = sub.add_parser("localize", help="top-k places of images, as CSV or JSON")
    loc.add_argument("--model", required=True, help="runs:/<id>/model, models:/<name>@<alias>, or a checkpoint")
    loc.add_argument("--index", required=True, help="a place index folder, or runs:/<id>/place_index")
    loc.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders of them")
    loc.add_argument("--top-k", type=int, default=5, help="places per image (default 5)")
    loc.add_argument("--out", default=None, help="file to write (default: standard output)")
    loc.add_argument("--format", choices=["csv", "json"], default=None, help="default: from --out's suffix, else csv")
    loc.set_defaults(func=cmd_localize)


def cmd_demo(args) -> int:
    from structvpr.demo import run_demo
    from structvpr.demo.data_stages import ShardsFailedVerification
    from structvpr.demo.stages import WorkFolderMismatch

    try:
        return run_demo(args.workdir, preset=args.preset, seed=args.seed, progress=not args.quiet)
    except WorkFolderMismatch as exc:
        return fail(str(exc))
    except ShardsFailedVerification as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1


def add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="datasets: synthetic city, shards, verification").add_subparsers(dest="data_cmd", required=True)
    synth = data.add_parser("synth", help="render the synthetic multi-condition city in the VG layout")
    synth.add_argument("out")
    synth.add_argument("--preset", default="small", help="tiny | small | medium | large (default small)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=parse_size, default=None, help="render size WxH (default: the preset's)")
    synth.add_argument("--workers", type=int, default=2)
    synth.set_defaults(func=cmd_data_synth)

    shards = data.add_parser("shards", help="write WebDataset shards: RGB + precomputed segmentation + metadata")
    shards.add_argument("--format", required=True, choices=["vg", "msls", "gsv", "pitts"])
    shards.add_argument("--root", required=True, help="dataset root folder")
    shards.add_argument("--seg-model", required=True, help="gt | path to a `seg train` checkpoint | hub:<smp hub id>")
    shards.add_argument("--out", required=True)
    shards.add_argument("--size", type=parse_size, default=(320, 240), help="stored image size WxH (default 320x240)")
    shards.add_argument("--images-per-place", type=int, default=4, help="K views per training place (default 4)")
    shards.add_argument("--shard-images", type=int, default=1000, help="images per shard (default 1000)")
    shards.add_argument("--splits", nargs="+", choices=["train", "val", "test"], help="default: every split present")
    shards.add_argument("--place-radius", type=float, default=10.0,
                        help="formats without place ids: a query joins the nearest database image within this many metres (default 10)")
    shards.add_argument("--workers", type=int, default=2, help="Ray Data actors (default 2)")
    shards.add_argument("--overwrite", action="store_true", help="replace an existing build in --out")
    shards.set_defaults(func=cmd_data_shards)

    verify = data.add_parser("verify", help="re-hash and decode every shard against the manifest")
    verify.add_argument("dir")
    verify.add_argument("--no-decode", action="store_true", help="only check sizes and sha256")
    verify.set_defaults(func=cmd_data_verify)


def add_seg_commands(sub) -> None:
    from structvpr.datasets.segmentation.train_config import SegTrainConfig

    seg = sub.add_parser("seg", help="segmentation models").add_subparsers(dest="seg_cmd", required=True)
    train = seg.add_parser("train", help="train a segmentation-models-pytorch model on labelled images")
    train.add_argument("--data", required=True, help="VG tree with labels/ beside images/, or a Cityscapes root")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    d = SegTrainConfig()  # the one set of defaults
    train.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    train.add_argument("--size", type=parse_size, default=d.image_size,
                       help=f"training size WxH (default {d.image_size[0]}x{d.image_size[1]})")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    train.add_argument("--arch", default=d.arch, help=f"smp architecture (default {d.arch})")
    train.add_argument("--encoder", default=d.encoder, help=f"default {d.encoder}")
    train.add_argument("--lr", type=float, default=d.lr, help=f"default {d.lr}")
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after this many steps")
    train.set_defaults(func=cmd_seg_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structvpr", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the main job end to end on the synthetic city, with a report")
    demo.add_argument("--workdir", default="structvpr-demo", help="where the demo writes (default ./structvpr-demo)")
    demo.add_argument("--preset", default="small", choices=["tiny", "small", "full"],
                      help="tiny: minutes (tests); small: under 20 minutes on 2 cores (default); "
                           "full: the CPU-scale recipes of docs/METHOD.md (hours)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    add_data_commands(sub)
    add_seg_commands(sub)
    add_train_commands(sub)
    add_registry_commands(sub)
    add_serving_commands(sub)
    return parser


# Errors of bad input defined beside heavy code: store.references imports torch.
LAZY_INPUT_ERRORS = (("structvpr.deploy.registry.records", "RegistryError"),
                     ("structvpr.platform.store.references", "ModelSourceError"))


def input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input. Evaluated only when an exception propagates, and without importing
    anything: an error whose module was never imported cannot have been raised, and importing torch only to
    print a one-line message cost seconds."""
    lazy = (getattr(sys.modules[module], name) for module, name in LAZY_INPUT_ERRORS if module in sys.modules)
    return DatasetError, ConfigError, *lazy


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after options; argparse leaves those after as extras.
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) in ("train", "tune") and all("=" in e for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except input_errors() as exc:  # bad input: a message, not a traceback
        return fail(str(exc))
    except PATH_ERRORS as exc:  # a path the user named that cannot be read or written
        return fail(f"{exc.filename or 'a path'}: {exc.strerror or exc}; check the path and its permissions")


# Raised by the OS for a path the user gave (unreadable folder, a file where a folder belongs, ...).
PATH_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)


def fail(message: str) -> int:
    """One line on stderr, exit status 2: what every bad input ends with."""
    print(f"structvpr: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
