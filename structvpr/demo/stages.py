"""The demo's stages: each prints its number and title, runs, and keeps what it found in stages/<name>.json,
so that a second `structvpr demo` skips every finished stage and only redoes what is missing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from structvpr.files import write_text_atomic


class WorkFolderMismatch(ValueError):
    """The work folder holds stages of another preset or seed: reusing them would mix two demos."""


class Stages:
    def __init__(self, work: Path, total: int, settings: dict):
        self.folder = work / "stages"
        self.total = total
        self.done = 0
        self.seconds: dict[str, float] = {}
        self.rounds: list[list[str]] = []  # stage names in the order they ran; stages run at once share a round
        self._counting = threading.Lock()  # stages run at once (run_at_once) number themselves one by one
        self._check_settings(settings)

    def _check_settings(self, settings: dict) -> None:
        """The settings the kept stages were made with must be these; the first run writes them down."""
        path = self.folder / "settings.json"
        if path.is_file():
            kept = json.loads(path.read_text())
            if kept != settings:
                made = " ".join(f"--{k} {v}" for k, v in kept.items())
                raise WorkFolderMismatch(f"{self.folder.parent} holds a demo made with {made}: give another --workdir, "
                                         "or remove that folder to start again")
            return
        self._keep(path, settings)

    def run(self, name: str, title: str, work: Callable[[], dict]) -> dict:
        """The stage's result: read back if a run before this one finished it, else computed and kept."""
        self.rounds.append([name])
        return self._run(name, title, work)

    def _run(self, name: str, title: str, work: Callable[[], dict]) -> dict:
        with self._counting:
            self.done += 1
            print(f"\n== {self.done}/{self.total} {title}", flush=True)
        kept = self.folder / f"{name}.json"
        if self.is_kept(name):
            print(f"   finished before; kept ({kept})")
            record = json.loads(kept.read_text())
        else:
            started = time.perf_counter()
            result = work()
            record = {"seconds": round(time.perf_counter() - started, 1), "result": result}
            self._keep(kept, record)
            print(f"   {name}: {record['seconds']:.0f} s", flush=True)
            record = json.loads(kept.read_text())  # as a rerun reads it: the same types (string keys) either way
        self.seconds[name] = record["seconds"]
        return record["result"]

    def is_kept(self, name: str) -> bool:
        """Whether a run before this one finished the stage."""
        return (self.folder / f"{name}.json").is_file()

    def run_at_once(self, stages: dict[str, tuple[str, Callable[[], dict]]]) -> dict[str, dict]:
        """Independent stages (name -> (title, work)) at once, each kept as it finishes. The first runs in this
        thread (Ray Tune catches signals only in the main thread), the others in threads of their own. A stage
        that fails raises once the others have finished and been kept, so a rerun redoes only that one."""
        first, *others = stages
        self.rounds.append(list(stages))
        with ThreadPoolExecutor(max(1, len(others))) as pool:
            running = {name: pool.submit(self._run, name, *stages[name]) for name in others}
            results = {first: self._run(first, *stages[first])}
            return results | {name: future.result() for name, future in running.items()}

    def wall_seconds(self) -> float:
        """The stages' time as a clock on the wall saw it: stages run at once count as the longest of them (summing
        their seconds would count the same minutes several times)."""
        return sum(max(self.seconds.get(name, 0.0) for name in names) for names in self.rounds)

    def _keep(self, path: Path, result: dict) -> None:
        # Written whole or not at all: a demo killed here redoes this stage, never reads half of it.
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=1, default=str))
