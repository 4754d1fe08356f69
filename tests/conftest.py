"""Shared fixtures: a local Ray instance and a tiny synthetic city, each made once per test session."""

from __future__ import annotations

import os

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


@pytest.fixture(scope="session")
def tiny_city(tmp_path_factory):
    """The tiny preset of the synthetic city, in the VG layout with labels."""
    from structvpr.datasets.synth import generate_city

    out = tmp_path_factory.mktemp("city")
    generate_city(out, preset="tiny", seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_shards(tiny_city, tmp_path_factory, ray_local):
    """Shards of the tiny city at 64x48 with ground-truth segmentation (read-only for tests)."""
    from structvpr.datasets.shards.build import BuildOptions, build_shards

    out = tmp_path_factory.mktemp("tiny-shards") / "shards"
    build_shards("vg", tiny_city, out, BuildOptions(image_size=(64, 48), progress=False))
    return out
