"""Shared fixtures: a local Ray instance and a tiny synthetic city, each made once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Nothing may download weights in tests: fail at once instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance sized for this machine; shut down after the session."""
    import ray

    # address="local": a new instance even when a `ray start` cluster of another test runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=True, ignore_reinit_error=True)  # the state API needs it
    yield ray
    ray.shutdown()


# `make test` (tests/run_areas.py) runs each area in a pytest process of its own and names a folder here that
# all of them share: the first area to need the tiny city or its shards makes them, the others read them
# (about 10 s an area). Without it (one area run by hand), each session makes its own.
SHARED_INPUTS = "STRUCTVPR_TEST_INPUTS"


def made_once(name: str, tmp_path_factory, make) -> Path:
    """`make(folder)` into a fresh folder, or, under run_areas, the folder an earlier area made (read-only)."""
    shared = os.environ.get(SHARED_INPUTS)
    if not shared:
        out = tmp_path_factory.mktemp(name) / name
        make(out)
        return out
    out = Path(shared) / name
    if not out.is_dir():  # made whole beside it, then renamed: an area never sees half a folder
        partial = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared)) / name
        make(partial)
        try:
            partial.rename(out)
        except OSError:  # an area in the other lane made it first: read theirs
            if not out.is_dir():
                raise
    return out


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """The tiny preset of the synthetic city, in the VG layout with labels (read-only for tests)."""
    from structvpr.datasets.synth import generate_city

    return made_once("city", tmp_path_factory,
                     lambda out: generate_city(out, preset="tiny", seed=0, workers=1, progress=False))


@pytest.fixture(scope="session")
def tiny_shards(tiny_city, tmp_path_factory):
    """Shards of the tiny city at 64x48 with ground-truth segmentation (read-only for tests).

    No `ray_local` here: under run_areas an earlier area made them, and an idle Ray instance beside a test's
    own Ray processes costs CPU (docs/TESTING.md); when they must be built, build_shards starts a local Ray."""
    from structvpr.datasets.shards.build import BuildOptions, build_shards

    return made_once("tiny-shards", tmp_path_factory,
                     lambda out: build_shards("vg", tiny_city, out, BuildOptions(image_size=(64, 48), progress=False)))
