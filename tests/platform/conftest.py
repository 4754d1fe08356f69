"""Fixtures of the platform tests beyond the session's tiny city and shards (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def train_only(tiny_city, tmp_path_factory, ray_local):
    """The tiny city's train split alone, at the size of tiny_shards: a training set like GSV-Cities, which has no
    val split and validates on other shards (eval.shards)."""
    from structvpr.datasets.shards.build import BuildOptions, build_shards

    out = tmp_path_factory.mktemp("train-only") / "shards"
    build_shards("vg", tiny_city, out, BuildOptions(image_size=(64, 48), progress=False, splits=("train",)))
    return out
