"""Gated promotion of the `champion` alias, rollback, and the history of moves kept as tags on the versions.

Every move runs under the model's `PromotionLock`: read the aliases, judge, set the aliases, check them,
then write one history tag per version involved (`structvpr.promotion.NNNN`, a JSON record), so that the
history can be read from the registry alone.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from structvpr.deploy.registry.lock import PromotionLock, who
from structvpr.deploy.registry.records import (CHAMPION, PREVIOUS, RECALL_NS, RegistryError, VersionRecord, alias_map,
                                               fmt, read_version, utc_text)

HISTORY_PREFIX = "structvpr.promotion."
TOLERANCE = 1e-9  # recalls are stored as exact reprs; only float subtraction noise is forgiven


class PromotionRefused(RegistryError):
    """A rule said no: the message names the rule and its numbers."""


@dataclass(frozen=True)
class Rules:
    margin: float = 0.5  # points of test R@1 a candidate must gain over the champion
    floor: float = 1.0  # test R@1 the first champion must reach


@dataclass(frozen=True)
class Move:
    """One change of the aliases: (from, to) versions of champion and previous, and why."""

    action: str  # promote | rollback
    model: str
    champion: tuple[str | None, str | None]
    previous: tuple[str | None, str | None]
    reason: str
    metrics: dict
    at: str = field(default_factory=lambda: utc_text(time.time()))
    by: str = field(default_factory=who)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def versions(self) -> list[str]:
        return sorted({v for pair in (self.champion, self.previous) for v in pair if v}, key=int)


def judge(candidate: VersionRecord, champion: VersionRecord | None, rules: Rules) -> str:
    """Why `candidate` may take the champion alias, or PromotionRefused naming the failed rule with its numbers."""
    refuse = f"{candidate.label} not promoted"
    ev = candidate.evaluation
    if ev is None:
        raise PromotionRefused(f"{refuse} (evaluation rule): it has no recorded test evaluation; run `structvpr "
                               f"registry promote {candidate.name} {candidate.version} --evaluate --shards DIR`")
    if champion is None:
        if ev.recall[1] < rules.floor - TOLERANCE:
            raise PromotionRefused(f"{refuse} (floor rule, no champion yet): candidate R@1 {fmt(ev.recall[1])} "
                                   f"does not reach the floor {fmt(rules.floor)}")
        return f"no champion yet; candidate R@1 {fmt(ev.recall[1])} reaches the floor {fmt(rules.floor)}"
    if champion.version == candidate.version:
        raise PromotionRefused(f"{refuse}: it is already the champion")
    held = champion.evaluation
    if held is None or held.manifest != ev.manifest:
        theirs = f"manifest {held.manifest[:12]}" if held else "no recorded test evaluation"
        raise PromotionRefused(f"{refuse} (same-benchmark rule): candidate evaluated on manifest {ev.manifest[:12]}, "
                               f"champion (version {champion.version}) on {theirs}; add --evaluate --shards DIR "
                               "to evaluate both on the same test split")
    gain = ev.recall[1] - held.recall[1]
    numbers = f"candidate R@1 {fmt(ev.recall[1])} {{}} champion {fmt(held.recall[1])} (version {champion.version})"
    if gain < rules.margin - TOLERANCE:
        raise PromotionRefused(f"{refuse} (margin rule): {numbers.format('does not beat')} by the margin "
                               f"{fmt(rules.margin)} (difference {gain:+.2f})")
    return f"{numbers.format('beats')} by {fmt(gain)} (margin {fmt(rules.margin)}) on manifest {ev.manifest[:12]}"


def promote(client, name: str, version: str, rules: Rules, lock: PromotionLock) -> Move:
    """Move `champion` to `version` if the rules allow; the displaced champion becomes `previous`."""
    with lock:
        aliases = alias_map(client, name)
        candidate = read_version(client, name, version, aliases)
        champion = read_version(client, name, aliases[CHAMPION], aliases) if CHAMPION in aliases else None
        reason = judge(candidate, champion, rules)
        old_previous = aliases.get(PREVIOUS)
        move = Move("promote", name, (champion and champion.version, candidate.version),
                    (old_previous, champion.version if champion else old_previous), reason,
                    {"candidate": recall_of(candidate), "champion": recall_of(champion), **asdict(rules)})
        apply_move(client, move, lock)
    return move


def rollback(client, name: str, lock: PromotionLock) -> Move:
    """Swap `champion` and `previous`: the last promotion undone, and recorded as a move of its own."""
    with lock:
        aliases = alias_map(client, name)
        champion, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
        if not champion or not previous or champion == previous:
            raise PromotionRefused(f"{name} cannot roll back: it needs a champion and a different previous version "
                                   f"(champion: {champion or 'none'}, previous: {previous or 'none'})")
        records = {v: read_version(client, name, v, aliases) for v in (champion, previous)}
        move = Move("rollback", name, (champion, previous), (previous, champion),
                    f"version {previous} back to champion, version {champion} to previous",
                    {"candidate": recall_of(records[previous]), "champion": recall_of(records[champion])})
        apply_move(client, move, lock)
    return move


def recall_of(record: VersionRecord | None) -> dict | None:
    ev = record.evaluation if record else None
    if ev is None:
        return None
    return {"version": record.version, "manifest": ev.manifest, **{f"recall_at_{n}": ev.recall[n] for n in RECALL_NS}}


def apply_move(client, move: Move, lock: PromotionLock) -> None:
    """Aliases, then a check that they are what we set, then the history: only moves that happened are recorded."""
    lock.check_held()
    steps = [(PREVIOUS, move.previous), (CHAMPION, move.champion)]
    # A promotion interrupted half-way then leaves the champion untouched; a rollback moves the champion first.
    for alias, (before, after) in steps if move.action == "promote" else steps[::-1]:
        if after is not None and after != before:
            client.set_registered_model_alias(move.model, alias, after)
    now = alias_map(client, move.model)
    expected = {CHAMPION: move.champion[1], PREVIOUS: move.previous[1]}
    if any(now.get(alias) != version for alias, version in expected.items() if version is not None):
        raise RegistryError(f"after the {move.action} of {move.model} the aliases are {now}, not {expected}: "
                            "something outside structvpr moved them meanwhile; check with `structvpr registry list`")
    record_move(client, move)


def record_move(client, move: Move) -> None:
    """One tag per involved version, numbered after that version's earlier moves (we hold the lock)."""
    value = json.dumps({k: v for k, v in asdict(move).items() if k != "model"}, separators=(",", ":"))
    for version in move.versions():
        numbers = history_keys(read_version(client, move.model, version, {}).tags).values()
        client.set_model_version_tag(move.model, version, f"{HISTORY_PREFIX}{max(numbers, default=0) + 1:04d}", value)


def history_keys(tags: dict[str, str]) -> dict[str, int]:
    """structvpr.promotion.NNNN tags and their numbers."""
    return {k: int(k[len(HISTORY_PREFIX):]) for k in tags
            if k.startswith(HISTORY_PREFIX) and k[len(HISTORY_PREFIX):].isdigit()}


def history(tags: dict[str, str]) -> list[dict]:
    """The moves recorded on one version, oldest first; an unreadable entry (edited by hand) is shown as such."""
    entries = []
    for key, _ in sorted(history_keys(tags).items(), key=lambda item: item[1]):
        try:
            entries.append(json.loads(tags[key]))
        except ValueError:
            entries.append({"unreadable": key})
    return entries


def describe(entry: dict) -> str:
    """One line for a move: when, who, what moved, why."""
    if "unreadable" in entry:
        return f"{entry['unreadable']}: not a structvpr move record"
    (c_from, c_to), (p_from, p_to) = entry["champion"], entry["previous"]
    moved = f"champion {c_from or 'none'} -> {c_to}"
    if p_from != p_to:
        moved += f", previous {p_from or 'none'} -> {p_to}"
    return f"{entry['at']} {entry['action']} by {entry['by']}: {moved}; {entry['reason']}"
