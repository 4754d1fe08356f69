"""The whole suite as `make test` runs it: one pytest process per area, one area after another.

Each area gets a fresh process and so a fresh local Ray instance; the tiny city and its shards are made
once, by the first area that needs them, in a folder all areas read (tests/conftest.py; an atomic rename, so
a lane never reads half a folder). Two lanes at once (TEST_LANES=2) took a quarter less time on the 2-core
machine (836-851 s against 1,141 s), but on a fresh clone a Ray node timed out starting under that load and
four tests failed (docs/TESTING.md has the times), so one lane stays the default. Each area's output is
printed whole when it ends; the summary at the end names every failed area.

    python tests/run_areas.py              # one area after another
    TEST_LANES=2 python tests/run_areas.py # two lanes at once (faster; for machines with more cores)
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The lanes of TEST_LANES=2, of about equal length (docs/TESTING.md has the times).
LANES = [["tests/datasets", "tests/test_*.py", "tests/tuning"], ["tests/platform", "tests/deploy"]]
PYTEST = [sys.executable, "-m", "pytest", "-ra", "--durations=20"]

_print_lock = threading.Lock()


def lanes(count: int) -> list[list[str]]:
    if count <= 1:
        return [[area for lane in LANES for area in lane]]
    return LANES


def run_area(area: str, logs: Path) -> tuple[str, int, float]:
    """One area in its own pytest process; its output printed whole at the end, not interleaved."""
    paths = sorted(glob.glob(area, root_dir=REPO)) or [area]
    log = logs / (area.replace("/", "_").replace("*", "all") + ".log")
    with _print_lock:
        print(f"=== start {area}", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        # tests/conftest.py: the tiny city and its shards, made by the first area that needs them
        env = os.environ | {"HF_HUB_OFFLINE": "1", "STRUCTVPR_TEST_INPUTS": str(logs / "inputs")}
        code = subprocess.run([*PYTEST, *paths], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.monotonic() - started
    with _print_lock:
        print(f"=== {area}: exit {code} after {seconds:.0f} s\n{log.read_text()}", flush=True)
    return area, code, seconds


def run_lane(areas: list[str], logs: Path) -> list[tuple[str, int, float]]:
    return [run_area(area, logs) for area in areas]


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="structvpr-test-logs-") as folder:
        (Path(folder) / "inputs").mkdir()
        chosen = lanes(int(os.environ.get("TEST_LANES", "1")))
        with ThreadPoolExecutor(len(chosen)) as pool:
            results = [r for lane in pool.map(lambda areas: run_lane(areas, Path(folder)), chosen) for r in lane]
    print(f"=== summary ({time.monotonic() - started:.0f} s in all)")
    for area, code, seconds in results:
        print(f"{'passed' if code == 0 else f'FAILED (exit {code})':>16}  {seconds:5.0f} s  {area}")
    failed = [area for area, code, _ in results if code != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
