"""`registry list` and `registry show`: versions with aliases, test evaluation, source run and history, as text."""

from __future__ import annotations

from structvpr.deploy.registry.lock import is_lock_model
from structvpr.deploy.registry.promotion import HISTORY_PREFIX, describe, history
from structvpr.deploy.registry.records import RECALL_NS, TEST_PREFIX, VersionRecord, alias_map, fmt, to_record, utc_text

COLUMNS = f"{'version':>7}  {'aliases':<18}" + "".join(f"{f'R@{n}':>7}" for n in RECALL_NS) + \
    f"  {'manifest':<12}  source run"


def all_pages(search) -> list:
    """Every result of an MLflow search that pages (`search(page_token)` -> PagedList)."""
    found, token = [], None
    while True:
        page = search(token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def model_names(client) -> list[str]:
    models = all_pages(lambda token: client.search_registered_models(page_token=token))
    return sorted(m.name for m in models if not is_lock_model(m.name))


def versions_of(client, name: str) -> list[VersionRecord]:
    """Newest first."""
    aliases = alias_map(client, name)
    found = all_pages(lambda token: client.search_model_versions(f"name = '{name}'", page_token=token))
    return sorted((to_record(mv, aliases) for mv in found), key=lambda r: -int(r.version))


def version_row(record: VersionRecord) -> str:
    ev = record.evaluation
    recalls = "".join(f"{fmt(ev.recall[n]) if ev else '-':>7}" for n in RECALL_NS)
    return (f"{record.version:>7}  {', '.join(record.aliases) or '-':<18}{recalls}  "
            f"{ev.manifest[:12] if ev else '-':<12}  {record.run_id or '-'}")


def list_text(client, names: list[str]) -> str:
    blocks = []
    for name in names:
        rows = [version_row(r) for r in versions_of(client, name)] or ["      (no versions)"]
        blocks.append("\n".join([name, COLUMNS, *rows]))
    return "\n\n".join(blocks) if blocks else "no registered models"


def show_text(record: VersionRecord) -> str:
    """One version in full: aliases, source, evaluation, history of moves, other tags."""
    ev = record.evaluation
    lines = [record.label,
             f"  aliases:     {', '.join(record.aliases) or 'none'}",
             f"  source run:  {record.run_id or 'none'} ({record.source or 'no source'})",
             f"  created:     {utc_text(record.created_ms / 1000)}"]
    if ev:
        recalls = ", ".join(f"R@{n} {fmt(ev.recall[n])}" for n in RECALL_NS)
        lines += [f"  test:        {recalls}", f"  manifest:    {ev.manifest}",
                  f"  shards:      {ev.shards or '?'} (evaluated {ev.evaluated_at or '?'})"]
    else:
        lines.append("  test:        not evaluated (promote --evaluate --shards DIR records it)")
    moves = history(record.tags)
    lines.append(f"  history:     {len(moves)} move(s)")
    lines += [f"    {describe(entry)}" for entry in moves]
    others = {k: v for k, v in sorted(record.tags.items())
              if not k.startswith((HISTORY_PREFIX, TEST_PREFIX))}
    if others:
        lines += ["  tags:"] + [f"    {k} = {v}" for k, v in others.items()]
    return "\n".join(lines)
