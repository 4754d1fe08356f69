"""Run every benchmark (bench/bench_*.py) in turn, each in its own process, with its quick defaults.

    .venv/bin/python bench/run_all.py                 # every benchmark that has --quick, with --quick
    .venv/bin/python bench/run_all.py --full          # their default (longer) runs instead
    .venv/bin/python bench/run_all.py --only build,reader

Benchmarks report; they do not fail on a missed target. This script exits non-zero only when a
benchmark crashed (a non-zero exit), so that a broken benchmark does not go unnoticed.
A benchmark without a --quick flag is listed and skipped in quick mode (its default run may be
long); --full runs it with its defaults.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = common.parser(__doc__)
    p.add_argument("--full", action="store_true", help="default runs instead of --quick")
    p.add_argument("--only", help="comma list of names (bench_NAME.py or NAME) to run")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p.parse_args(argv)


def has_quick(script: Path) -> bool:
    return "--quick" in script.read_text()


def main(argv=None) -> int:
    args = parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {w.strip().removeprefix("bench_").removesuffix(".py") for w in args.only.split(",")}
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    if args.list:
        for s in scripts:
            print(f"{s.name:28s} {'--quick' if has_quick(s) else '(no --quick)'}")
        return 0
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    summary = []
    for script in scripts:
        if args.full:
            cmd = [sys.executable, str(script)]
        elif has_quick(script):
            cmd = [sys.executable, str(script), "--quick"]
        else:
            print(f"\n=== {script.name}: skipped (no --quick flag; run it with --full or by hand)", flush=True)
            summary.append((script.name, "skipped", "-", "-"))
            continue
        print(f"\n=== python bench/{script.name} {' '.join(cmd[2:])}", flush=True)
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent).returncode
        seconds = time.perf_counter() - start
        summary.append((script.name, "quick" if "--quick" in cmd else "default", rc, f"{seconds:.0f}"))
    print("\nbenchmark                    mode      exit  seconds")
    for name, mode, rc, seconds in summary:
        print(f"{name:28s} {mode:9s} {rc!s:>4s}  {seconds:>7s}")
    crashed = [name for name, _, rc, _ in summary if rc not in ("-", 0)]
    if crashed:
        print(f"crashed: {', '.join(crashed)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
