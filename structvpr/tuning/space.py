"""The search space: recipe keys and their distributions, checked against the recipe, turned into Ray Tune's.

Each key must be a recipe key, and every value its distribution can give must make a valid recipe:
the ends of each range (and every choice) are tried on the recipe before any trial starts, so a
sweep never dies on its fifth trial because `noisy_rank` fell below `good_rank`.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable

from structvpr.config import ConfigError, from_dict, set_dotted
from structvpr.platform.recipe import Recipe

Parsed = tuple[str, list]  # (distribution name, its arguments)


def _range(name: str, args: list, key: str, *, integer: bool = False, positive: bool = False, step: bool = False):
    count = 3 if step else 2
    if len(args) != count or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        shape = "[low, high, step]" if step else "[low, high]"
        raise ConfigError(f"tune.space.{key}: {name} takes {shape} numbers, got {args!r}")
    if not all(math.isfinite(a) for a in args):
        raise ConfigError(f"tune.space.{key}: {name} bounds must be finite, got {args!r}")
    low, high = args[0], args[1]
    if low > high:
        raise ConfigError(f"tune.space.{key}: {name} low {low} is greater than high {high}")
    if integer and not all(float(a).is_integer() for a in args):
        raise ConfigError(f"tune.space.{key}: {name} needs whole numbers, got {args!r}")
    if positive and low <= 0:
        raise ConfigError(f"tune.space.{key}: {name} needs low > 0 (a log scale), got {low}")
    if step and args[2] <= 0:
        raise ConfigError(f"tune.space.{key}: {name} step must be positive, got {args[2]}")


def _choice(args: list, key: str):
    if not isinstance(args, list) or not args:
        raise ConfigError(f"tune.space.{key}: choice takes a non-empty list of values, got {args!r}")


# name -> (check(args, key), the values to try on the recipe, the Ray Tune domain)
DISTRIBUTIONS: dict[str, tuple[Callable, Callable, Callable]] = {
    "choice": (_choice, lambda a: list(a), lambda t, a: t.choice(a)),
    "uniform": (lambda a, k: _range("uniform", a, k), lambda a: a, lambda t, a: t.uniform(*a)),
    "quniform": (lambda a, k: _range("quniform", a, k, step=True), lambda a: a[:2], lambda t, a: t.quniform(*a)),
    "loguniform": (lambda a, k: _range("loguniform", a, k, positive=True), lambda a: a, lambda t, a: t.loguniform(*a)),
    # Both ends included (Tune's randint excludes the high end: users should not need to know).
    "randint": (lambda a, k: _range("randint", a, k, integer=True), lambda a: [int(v) for v in a],
                lambda t, a: t.randint(int(a[0]), int(a[1]) + 1)),
    "qrandint": (lambda a, k: _range("qrandint", a, k, integer=True, step=True), lambda a: [int(v) for v in a[:2]],
                 lambda t, a: t.qrandint(*(int(v) for v in a))),
}


def parse_space(space: dict, recipe: dict) -> dict[str, Parsed]:
    """{recipe key: (distribution, args)}, each checked: a known distribution, sane bounds, and values the
    recipe accepts at both ends of the range (every choice). ConfigError naming the key otherwise."""
    parsed = {key: _parse_one(key, spec) for key, spec in flat_space(space).items()}
    corners = {key: DISTRIBUTIONS[name][1](args) for key, (name, args) in parsed.items()}
    for key, values in corners.items():  # each key alone first: the message then names just it
        for value in values:
            try_values(recipe, {key: value})
    # Every combination of the ends: ranges that are fine alone can clash (good_rank above noisy_rank).
    for values in itertools.product(*corners.values()):
        try_values(recipe, dict(zip(corners, values)))
    return parsed


def parse_points(points: list, parsed: dict[str, Parsed], recipe: dict) -> list[dict]:
    """tune.points_to_evaluate as flat {space key: value} mappings, each naming every space key and making a
    valid recipe. ConfigError naming the point otherwise."""
    flat_points = []
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            raise ConfigError(f"tune.points_to_evaluate[{i}] must map space keys to values, got {point!r}")
        flat = _flat_point(point)
        if set(flat) != set(parsed):
            raise ConfigError(f"tune.points_to_evaluate[{i}] must give exactly the space's keys "
                              f"({', '.join(sorted(parsed))}); it gives {', '.join(sorted(flat)) or 'none'}")
        try_values(recipe, flat)
        flat_points.append(flat)
    return flat_points


def _flat_point(point: dict, prefix: str = "") -> dict:
    """A point written nested (kd: {lam: 0.5}) or dotted (kd.lam: 0.5) as dotted keys (a value is never a mapping)."""
    flat = {}
    for key, value in point.items():
        flat.update(_flat_point(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def flat_space(space: dict, prefix: str = "") -> dict:
    """Dotted recipe keys -> distributions. A space may be written nested (kd: {lam: {uniform: ...}}), and a
    `tune.space.kd.lam=...` override arrives nested: both mean the key kd.lam."""
    flat = {}
    for key, spec in space.items():
        # A distribution is one name with its arguments (a list); a section maps keys to more mappings.
        is_leaf = not isinstance(spec, dict) or any(not isinstance(v, dict) for v in spec.values())
        if is_leaf:
            flat[prefix + key] = spec
        else:
            flat.update(flat_space(spec, f"{prefix}{key}."))
    return flat


def _parse_one(key: str, spec) -> Parsed:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"tune.space.{key} must be one distribution, e.g. {{uniform: [0.5, 2.0]}}, got {spec!r}")
    (name, args), = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"tune.space.{key}: unknown distribution {name!r}; use one of {', '.join(DISTRIBUTIONS)}")
    DISTRIBUTIONS[name][0](args, key)
    return name, args


def try_values(recipe: dict, values: dict[str, Any]) -> None:
    """The recipe with these values must still be a recipe (known keys, valid values)."""
    try:
        from_dict(Recipe, apply(recipe, values))
    except ConfigError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise ConfigError(f"tune.space: the point {shown} does not make a valid recipe: {exc}") from None


def apply(recipe: dict, values: dict) -> dict:
    """A copy of the recipe mapping with the sampled values set (dotted keys)."""
    out = copy.deepcopy(recipe)
    for key, value in values.items():
        set_dotted(out, key, value)
    return out


def tune_domains(parsed: dict[str, Parsed]) -> dict:
    """Ray Tune's search space for the parsed distributions (flat: a trial's config is {recipe key: value})."""
    from ray import tune

    return {key: DISTRIBUTIONS[name][2](tune, args) for key, (name, args) in parsed.items()}
