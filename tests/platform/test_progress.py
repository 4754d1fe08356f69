"""The driver's progress bar: rank 0 writes its position to the run folder, a driver thread draws it."""

from __future__ import annotations

import json

import torch

from structvpr.platform.jobs.progress import DriverProgress, StepPoster, progress_path


def test_posted_steps_reach_the_bar(tmp_path, capsys):
    path = progress_path(str(tmp_path), "teacher-x")
    with DriverProgress(path, epochs=2, steps_per_epoch=4, label="teacher t"):
        poster = StepPoster(path, steps_per_epoch=4)
        poster.step(0, 1, torch.tensor(0.9))
        poster.step(0, 2, torch.tensor(0.8))  # within POST_SECONDS of the last write: skipped
        assert json.loads(path.read_text())["step"] == 1
        poster.step(1, 4, torch.tensor(0.25))  # an epoch's last step is always written
    err = capsys.readouterr().err
    assert "teacher t" in err and "8/8" in err and "loss=0.250" in err


def test_a_stale_progress_file_is_not_shown(tmp_path, capsys):
    path = progress_path(str(tmp_path), "run")
    StepPoster(path, steps_per_epoch=4).step(1, 4, torch.tensor(0.5))  # a finished run's last position
    with DriverProgress(path, epochs=2, steps_per_epoch=4, label="again"):
        pass
    assert "8/8" not in capsys.readouterr().err and not path.exists()


def test_disabled_progress_starts_nothing(tmp_path):
    with DriverProgress(tmp_path / "p.json", epochs=1, steps_per_epoch=1, label="x", enabled=False) as progress:
        assert progress._thread is None
