"""The demo's stages: each prints its number and title, runs, and keeps what it found in stages/<name>.json,
so that a second `structvpr demo` skips every finished stage and only redoes what is missing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


class WorkFolderMismatch(ValueError):
    """The work folder holds stages of another preset or seed: reusing them would mix two demos."""


class Stages:
    def __init__(self, work: Path, total: int, settings: dict):
        self.folder = work / "stages"
        self.total = total
        self.done = 0
        self.seconds: dict[str, float] = {}
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
        self.done += 1
        print(f"\n== {self.done}/{self.total} {title}", flush=True)
        kept = self.folder / f"{name}.json"
        if kept.is_file():
            print(f"   finished before; kept ({kept})")
            record = json.loads(kept.read_text())
        else:
            started = time.perf_counter()
            result = work()
            record = {"seconds": round(time.perf_counter() - started, 1), "result": result}
            self._keep(kept, record)
            print(f"   {record['seconds']:.0f} s", flush=True)
            record = json.loads(kept.read_text())  # as a rerun reads it: the same types (string keys) either way
        self.seconds[name] = record["seconds"]
        return record["result"]

    def _keep(self, path: Path, result: dict) -> None:
        # Written whole or not at all: a demo killed here redoes this stage, never reads half of it.
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(result, indent=1, default=str))
        os.replace(partial, path)
