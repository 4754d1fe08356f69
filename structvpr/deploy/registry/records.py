"""What the registry holds about a version: aliases, source run, the test evaluation `promote --evaluate` wrote."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

CHAMPION, PREVIOUS = "champion", "previous"
RECALL_NS = (1, 5, 10)
TEST_PREFIX = "structvpr.test."  # tags written by `promote --evaluate`
RECALL_TAGS = {n: f"{TEST_PREFIX}recall_at_{n}" for n in RECALL_NS}
MANIFEST_TAG = f"{TEST_PREFIX}manifest"
SHARDS_TAG = f"{TEST_PREFIX}shards"
EVALUATED_AT_TAG = f"{TEST_PREFIX}evaluated_at"


class RegistryError(Exception):
    """A registry action refused or impossible: one line for the user, exit status 2 (a CI gate fails on it)."""


@dataclass(frozen=True)
class Evaluation:
    """Test recall@N (in %) on the shards whose manifest hashes to `manifest`."""

    manifest: str
    recall: dict[int, float]
    shards: str = ""
    evaluated_at: str = ""

    def tags(self) -> dict[str, str]:
        tags = {RECALL_TAGS[n]: repr(float(self.recall[n])) for n in RECALL_NS}
        return tags | {MANIFEST_TAG: self.manifest, SHARDS_TAG: self.shards, EVALUATED_AT_TAG: self.evaluated_at}


@dataclass(frozen=True)
class VersionRecord:
    name: str
    version: str
    run_id: str
    source: str
    created_ms: int
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"

    @property
    def evaluation(self) -> Evaluation | None:
        """None unless every recall tag (a finite number) and the manifest are there: half a record is no record."""
        try:
            recall = {n: float(self.tags[RECALL_TAGS[n]]) for n in RECALL_NS}
            manifest = self.tags[MANIFEST_TAG]
        except (KeyError, ValueError):
            return None
        if not all(math.isfinite(r) for r in recall.values()):
            return None
        return Evaluation(manifest, recall, self.tags.get(SHARDS_TAG, ""), self.tags.get(EVALUATED_AT_TAG, ""))


def fmt(value: float) -> str:
    """A recall or margin as people write it: 34.2, 33.33, 50."""
    return f"{round(value, 2):g}"


def alias_map(client, name: str) -> dict[str, str]:
    """alias -> version (as text: the sqlite store answers ints, the REST store strings)."""
    from mlflow.exceptions import MlflowException

    try:
        return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}
    except MlflowException as exc:
        raise RegistryError(f"registered model {name!r}: {first_line(exc)}") from None


def read_version(client, name: str, version: str, aliases: dict[str, str] | None = None) -> VersionRecord:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} version {version}: {first_line(exc)}") from None
    return to_record(mv, alias_map(client, name) if aliases is None else aliases)


def to_record(mv, aliases: dict[str, str]) -> VersionRecord:
    """A record from an MLflow ModelVersion; aliases from the model (search results leave a version's empty)."""
    version = str(mv.version)
    own = tuple(sorted(a for a, v in aliases.items() if v == version))
    return VersionRecord(mv.name, version, mv.run_id or "", mv.source or "", int(mv.creation_timestamp or 0), own,
                         dict(mv.tags or {}))


def version_by_alias(client, name: str, alias: str) -> VersionRecord | None:
    aliases = alias_map(client, name)
    return read_version(client, name, aliases[alias], aliases) if alias in aliases else None


def parse_reference(text: str) -> tuple[str, str, str]:
    """NAME@ALIAS -> (name, "", alias); NAME/VERSION -> (name, version, ""); a models:/ prefix is allowed."""
    ref = text.removeprefix("models:/")
    by_alias = re.fullmatch(r"(.+)@([\w-]+)", ref)
    if by_alias:
        return by_alias[1], "", by_alias[2]
    by_version = re.fullmatch(r"(.+)/(\d+)", ref)
    if by_version:
        return by_version[1], by_version[2], ""
    raise RegistryError(f"{text!r}: give NAME@ALIAS or NAME/VERSION, e.g. structvpr-student@champion")


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def utc_text(seconds: float) -> str:
    """2026-12-02T23:11:05Z: how times are written in tags and shown."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
