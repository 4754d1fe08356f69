"""`structvpr registry list | show | promote | rollback`: what cli.py calls; MLflow's errors become RegistryError."""

from __future__ import annotations

import math
from contextlib import contextmanager

from structvpr.deploy.registry.listing import list_text, model_names, show_text
from structvpr.deploy.registry.lock import PromotionLock
from structvpr.deploy.registry.promotion import Move, Rules, describe, promote, rollback
from structvpr.deploy.registry.records import RegistryError, first_line, parse_reference, read_version, version_by_alias


@contextmanager
def registry_client(uri: str):
    """An MlflowClient for `uri`; an MLflow failure (unknown model, server down) ends as one line naming the URI."""
    from mlflow.exceptions import MlflowException

    from structvpr.platform.store.tracking import client

    try:
        yield client(uri)
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {uri}: {first_line(exc)}") from None


def run_list(uri: str, name: str | None = None) -> int:
    with registry_client(uri) as c:
        print(list_text(c, [name] if name else model_names(c)))
    return 0


def run_show(uri: str, ref: str) -> int:
    name, version, alias = parse_reference(ref)
    with registry_client(uri) as c:
        record = read_version(c, name, version) if version else version_by_alias(c, name, alias)
        if record is None:
            raise RegistryError(f"{name} has no version with the alias {alias!r}")
        print(show_text(record))
    return 0


def run_promote(uri: str, name: str, version: str, rules: Rules, shards: str | None = None,
                lock_timeout_s: float = 120.0, lock_ttl_s: float = 600.0) -> int:
    """Exit 0 when the champion moved; a PromotionRefused (exit 2 in cli.py) when a rule said no."""
    check_number("--margin", rules.margin)
    check_number("--floor", rules.floor)
    with registry_client(uri) as c:
        if shards:  # outside the lock: evaluation takes minutes, the lock is for the read-compare-set only
            from structvpr.deploy.registry.evaluation import evaluate_for_promotion

            evaluate_for_promotion(c, uri, name, version, shards)
        report(promote(c, name, version, rules, PromotionLock(c, name, lock_timeout_s, lock_ttl_s)))
    return 0


def run_rollback(uri: str, name: str, lock_timeout_s: float = 120.0, lock_ttl_s: float = 600.0) -> int:
    with registry_client(uri) as c:
        report(rollback(c, name, PromotionLock(c, name, lock_timeout_s, lock_ttl_s)))
    return 0


def report(move: Move) -> None:
    print(f"{move.model}: {describe(vars(move))}")


def check_number(option: str, value: float) -> None:
    if not math.isfinite(value):
        raise RegistryError(f"{option} must be a number of recall@1 points, got {value}")
