"""The demo's stage bookkeeping, without Ray: kept stages are skipped, and stages run at once are timed once."""

from __future__ import annotations

import time

import pytest

from structvpr.demo.stages import Stages, WorkFolderMismatch


def napping(seconds: float):
    def work() -> dict:
        time.sleep(seconds)
        return {"slept": seconds}
    return work


def test_stages_run_at_once_count_as_the_longest_of_them_not_their_sum(tmp_path):
    stages = Stages(tmp_path, total=4, settings={"preset": "tiny", "seed": 0})
    stages.run("first", "one stage", napping(0.2))
    started = time.perf_counter()
    stages.run_at_once({"a": ("a", napping(0.6)), "b": ("b", napping(0.6)), "c": ("c", napping(0.3))})
    at_once = time.perf_counter() - started

    assert at_once < 1.2  # they did run at once: one after another would take 1.5 s
    assert sum(stages.seconds.values()) == pytest.approx(1.7, abs=0.15)  # the sum counts the overlap three times
    assert stages.wall_seconds() == pytest.approx(0.8, abs=0.15)  # the first stage, then the longest of a, b, c


def test_a_second_run_reads_kept_stages_back_with_their_first_times(tmp_path):
    first = Stages(tmp_path, total=2, settings={"preset": "tiny", "seed": 0})
    first.run("kept", "a stage", napping(0.3))

    again = Stages(tmp_path, total=2, settings={"preset": "tiny", "seed": 0})
    result = again.run("kept", "a stage", napping(30))  # would take 30 s if it ran again

    assert result == {"slept": 0.3}
    assert again.wall_seconds() == pytest.approx(0.3, abs=0.1)


def test_a_work_folder_of_another_seed_is_refused(tmp_path):
    Stages(tmp_path, total=1, settings={"preset": "tiny", "seed": 0})
    with pytest.raises(WorkFolderMismatch, match="--seed 0"):
        Stages(tmp_path, total=1, settings={"preset": "tiny", "seed": 1})
