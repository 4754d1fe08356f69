"""The sweep recipe before any trial: the tune section, the space at its corners, the metric, the names."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from structvpr.config import ConfigError, load_config
from structvpr.platform.recipe import Recipe
from structvpr.tuning.section import TuneSection
from structvpr.tuning.space import flat_space, parse_space, tune_domains


@pytest.fixture
def recipe():
    return asdict(load_config(Recipe, "configs/tiny/student.yaml", ["teacher=t", "data.shards=s"]))


def test_a_space_becomes_ray_tune_domains(recipe):
    from ray.tune.search.sample import Categorical, Float, Integer

    parsed = parse_space({"kd.weighting.good_rank": {"randint": [1, 3]}, "kd.lam": {"loguniform": [0.1, 10]},
                          "kd.tau": {"choice": [0.05, 0.1]}, "kd.weighting.noisy_rank": {"qrandint": [10, 40, 10]}},
                         recipe)
    domains = tune_domains(parsed)
    assert isinstance(domains["kd.weighting.good_rank"], Integer) and isinstance(domains["kd.lam"], Float)
    assert isinstance(domains["kd.tau"], Categorical)
    # randint is inclusive for users: 3 must be reachable (Ray's own randint leaves out the high end)
    assert {domains["kd.weighting.good_rank"].sample() for _ in range(200)} == {1, 2, 3}


def test_nested_and_dotted_spaces_mean_the_same_keys():
    nested = {"kd": {"lam": {"uniform": [0.5, 2]}, "weighting": {"w_high": {"uniform": [1, 3]}}}}
    assert flat_space(nested) == {"kd.lam": {"uniform": [0.5, 2]}, "kd.weighting.w_high": {"uniform": [1, 3]}}


@pytest.mark.parametrize("space, named", [
    ({"kd.lamb": {"uniform": [1, 2]}}, "kd.lamb"),
    ({"kd.lam": {"uniform": [2, 1]}}, "low 2 is greater than high 1"),
    ({"kd.lam": {"loguniform": [0, 1]}}, "low > 0"),
    ({"kd.lam": {"gauss": [0, 1]}}, "unknown distribution 'gauss'"),
    ({"kd.lam": {"uniform": [1]}}, "[low, high]"),
    ({"kd.lam": {"uniform": [1, ".inf"]}}, "numbers"),
    ({"kd.tau": {"choice": []}}, "non-empty list"),
    ({"kd.weighting.good_rank": {"randint": [1.5, 3]}}, "whole numbers"),
    ({"kd.weighting.noisy_rank": {"qrandint": [5, 50, 0]}}, "step must be positive"),
    ({"kd.lam": 3}, "must be one distribution"),
    ({"kd.tau": {"uniform": [0, 1]}}, "kd.tau"),  # tau 0 is not a valid recipe
    # fine alone, not together: good_rank 20 above noisy_rank 5
    ({"kd.weighting.good_rank": {"randint": [1, 20]}, "kd.weighting.noisy_rank": {"randint": [5, 50]}}, "good_rank"),
])
def test_bad_spaces_are_refused_by_key(recipe, space, named):
    with pytest.raises(ConfigError) as caught:
        parse_space(space, recipe)
    assert named in str(caught.value)


@pytest.mark.parametrize("values, named", [
    ({"num_samples": 0}, "tune.num_samples"),
    ({"searcher": "grid"}, "tune.searcher"),
    ({"mode": "best"}, "tune.mode"),
    ({"space": {}}, "tune.space is empty"),
    ({"scheduler": {"name": "hyperband"}}, "tune.scheduler.name"),
    ({"scheduler": {"reduction_factor": 1}}, "reduction_factor"),
])
def test_bad_tune_sections_are_refused_by_key(values, named):
    from structvpr.config import from_dict

    data = {"space": {"kd.lam": {"uniform": [0.5, 2]}}, **values}
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        from_dict(TuneSection, data, "tune.")
