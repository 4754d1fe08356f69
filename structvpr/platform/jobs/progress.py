"""A training progress bar on the driver, fed by rank 0 through a small file in the run's folder.

Ray Train reports once per epoch (`ray.train.report` is a barrier across workers and stores a
result each time), so a bar driven by reports would move once an epoch. Instead rank 0 writes its
position to `<storage_path>/<run name>/progress.json` at most every `POST_SECONDS` (atomically:
a temporary file renamed over the last one) and a driver thread polls that file into a tqdm bar.
The run folder is where Ray Train keeps the checkpoints, so it is reachable from every node
already (shared storage on a cluster). After an automatic restart the bar follows the resumed
position back. A first version posted to a Ray actor instead; in a long-lived driver Ray once lost
the actor's ALIVE notification and every call to it hung (the file cannot).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

POST_SECONDS = 0.5
POLL_SECONDS = 0.5
PROGRESS_FILE = "progress.json"


def progress_path(storage_path: str, run_name: str) -> Path:
    return Path(storage_path) / run_name / PROGRESS_FILE


class StepPoster:
    """Rank 0's side: write the position now and then; `loss` is only read (a device sync) when writing."""

    def __init__(self, path: str | Path, steps_per_epoch: int):
        self.path, self.steps_per_epoch, self.last = Path(path), steps_per_epoch, 0.0

    def step(self, epoch: int, step: int, loss) -> None:
        now = time.monotonic()
        if now - self.last < POST_SECONDS and step < self.steps_per_epoch:
            return
        self.last = now
        state = {"epoch": epoch, "step": step, "steps_per_epoch": self.steps_per_epoch, "loss": float(loss),
                 "time": time.time()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)  # readers never see half a file
        except OSError:
            pass  # a full or read-only disk must not stop training for a progress bar


class DriverProgress:
    """Context manager on the driver: draws the bar from a thread while the job runs."""

    def __init__(self, path: str | Path, epochs: int, steps_per_epoch: int, label: str, enabled: bool = True):
        self.path, self.epochs, self.steps_per_epoch = Path(path), epochs, steps_per_epoch
        self.label, self.enabled = label, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DriverProgress":
        if self.enabled:
            self.path.unlink(missing_ok=True)  # a finished run's last position is not this run's
            self._thread = threading.Thread(target=self._draw, name="structvpr-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _draw(self) -> None:
        from tqdm import tqdm

        # Off a terminal (ray job logs, CI) a bar redrawn twice a second is noise: a line every 30 s.
        every = POLL_SECONDS if sys.stderr.isatty() else 30.0
        with tqdm(total=self.epochs * self.steps_per_epoch, desc=self.label, unit="step", mininterval=every,
                  dynamic_ncols=True) as bar:
            drawn = 0.0
            while not self._stop.wait(POLL_SECONDS):
                if time.monotonic() - drawn >= every:
                    drawn = self._show(bar, self._read()) or drawn
            self._show(bar, self._read())  # where the run ended, whatever the interval

    def _show(self, bar, state: dict) -> float | None:
        if not state:
            return None
        bar.n = state["epoch"] * self.steps_per_epoch + state["step"]  # may go back after a restart
        bar.set_postfix(epoch=state["epoch"] + 1, loss=f"{state['loss']:.3f}", refresh=False)
        bar.refresh()
        return time.monotonic()

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):  # not written yet
            return {}
