"""Figures of the ranks table and of weighting as PNG files: where r_T falls, what the teacher gets wrong, group shares.

`plot_rank_histogram` shows how r_T spreads and how many views the noisy threshold cuts away;
`plot_noisiest` shows the views the teacher ranks worst beside its top wrong retrieval, so a person
can tell label noise (an occluded or mislocated view) from a teacher that is merely weak; and
`plot_group_shares` follows a weighted student's weighting groups epoch by epoch, overall and the
noisy share per condition. The house style (Agg backend, framed tiles, `_save`) is the evaluation
figures'.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from structvpr.datasets.images import decode_ids, decode_rgb
from structvpr.datasets.records import DatasetError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.datasets.shards.reader import place_label
from structvpr.datasets.shards.tar_reader import read_tar_samples
# pyplot comes from the evaluation figures' module, which selects the Agg backend before pyplot loads.
from structvpr.platform.evaluation.plots import QUERY, WRONG, _save, _tile, plt
from structvpr.platform.losses.weighting import GROUPS

from structvpr.platform.ranking.table import RankRow, RanksTable

# A fixed categorical palette indexed by class id, so a class has one colour in every figure and run.
PALETTE = (np.array(plt.get_cmap("tab10").colors) * 255).astype(np.uint8)


def plot_rank_histogram(table: RanksTable, path, noisy_rank: int) -> Path:
    """Histogram of r_T on log-spaced bins, overall and per condition, with the noisy threshold marked."""
    if not table.rows:
        return _no_rows(path, "r_T histogram")
    ranks = np.array([r.r_t for r in table.rows])
    # Ranks run from 1 to the gallery size: linear bins would crush everything but rank 1 into one bar.
    # Edges at half ranks put each whole rank inside a bar, and the noisy line (noisy_rank + 0.5) on an edge.
    bins = np.unique(np.geomspace(1, max(ranks.max(), noisy_rank) + 1, 40).round()) - 0.5
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ax.hist(ranks, bins=bins, histtype="step", lw=2.5, color="black", label=f"all ({len(ranks)})")
    for condition, values in sorted(_ranks_by_condition(table.rows).items()):
        ax.hist(values, bins=bins, histtype="step", lw=1.3, label=f"{condition or 'no condition'} ({len(values)})")
    ax.axvline(noisy_rank + 0.5, color=WRONG, ls="--", label=f"noisy beyond r_T = {noisy_rank}")
    ax.set_xscale("log")
    ax.set_xlabel("r_T (rank of the true positive under the out-of-fold teacher)")
    ax.set_ylabel("training views")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    share = float(np.mean(ranks > noisy_rank))
    ax.set_title(f"r_T of {len(ranks)} training views: {share:.1%} noisy (r_T > {noisy_rank})")
    return _save(fig, path)


def _ranks_by_condition(rows: list[RankRow]) -> dict[str, list[int]]:
    by_condition = defaultdict(list)
    for row in rows:
        by_condition[row.condition].append(row.r_t)
    return by_condition


def plot_noisiest(table: RanksTable, shard_dir: str, path, n: int = 8) -> Path:
    """The n views with the largest r_T, each beside the teacher's top wrong retrieval, RGB and segmentation.

    Ties in r_T go to the view whose hardest negative beats its positive by most (lowest
    sim_pos - sim_neg): the teacher is surest of its mistake there. A DatasetError names any key
    (of a view or of its retrieval) that the training shards do not hold.
    """
    rows = sorted(table.rows, key=lambda r: (-r.r_t, r.sim_pos - r.sim_neg))[:n]
    if not rows:
        return _no_rows(path, "noisiest views")
    samples = _read_samples(shard_dir, {r.key for r in rows} | {r.top_key for r in rows})
    fig, axes = plt.subplots(len(rows), 4, figsize=(2.4 * 4, 2.1 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")
    for ax_row, row in zip(axes, rows):
        rgb, ids = _view(samples, row.key, row.view, shard_dir)
        top_rgb, top_ids = _view(samples, row.top_key, row.top_view, shard_dir)
        label = f"place {row.place} v{row.view} {row.condition}\nr_T={row.r_t}"
        # Neutral "/" rather than "<": at r_T = 1 the hardest negative ranks below the positive.
        top_label = f"top neg: place {place_label(row.top_key)} v{row.top_view}\n" \
                    f"sim pos {row.sim_pos:.2f} / neg {row.sim_neg:.2f}"
        _tile(ax_row[0], rgb, QUERY, label)
        _tile(ax_row[1], _colourise(ids), QUERY, "segmentation")
        _tile(ax_row[2], top_rgb, WRONG, top_label)
        _tile(ax_row[3], _colourise(top_ids), WRONG, "its segmentation")
    fig.suptitle(f"the {len(rows)} views the teacher ranks worst, with its hardest negative (red)")
    return _save(fig, path)


def _read_samples(shard_dir: str, keys: set[str]) -> dict[str, dict]:
    """The samples of these keys, from one pass over the training place shards; the rest is not kept."""
    found = {}
    for sample in read_tar_samples(Manifest.load(shard_dir).shard_paths("train", "places")):
        if sample["__key__"] in keys:
            found[sample["__key__"]] = sample
            if len(found) == len(keys):
                break  # the rest of the shards cannot add anything
    missing = sorted(keys - found.keys())
    if missing:
        raise DatasetError(f"the training shards in {shard_dir} hold no sample {missing[0]} "
                           f"({len(missing)} key(s) of the ranks table missing); the table belongs to other shards: "
                           "rank again with a teacher trained on these shards")
    return found


def _view(samples: dict[str, dict], key: str, view: int, shard_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, class ids) of one stored view of a place sample."""
    sample = samples[key]
    stored = json.loads(sample["json"])["num_views"]
    if not 0 <= view < stored or f"{view}.jpg" not in sample or f"{view}.seg.png" not in sample:
        raise DatasetError(f"sample {key} in {shard_dir} has no view {view} with its segmentation "
                           f"({stored} stored); the ranks table belongs to other shards")
    return decode_rgb(sample[f"{view}.jpg"]), decode_ids(sample[f"{view}.seg.png"])


def _colourise(ids: np.ndarray) -> np.ndarray:
    # Wraps past ten classes rather than failing: a figure must not stop a run over a colour.
    return PALETTE[ids.astype(np.intp) % len(PALETTE)]


def plot_group_shares(history: list[dict], path) -> Path:
    """Weighting group shares per epoch (stacked bars) and the noisy share per condition (lines)."""
    epochs = [h for h in history if _group_total(h) > 0]  # teachers, unweighted students: no counts
    if not epochs:
        return _no_rows(path, "weighting groups")
    x = [int(h["epoch"]) for h in epochs]
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    bottom = np.zeros(len(epochs))
    for group in GROUPS:
        share = np.array([h.get(f"group_{group}", 0) / _group_total(h) for h in epochs])
        bars.bar(x, share, bottom=bottom, label=group, color=WRONG if group == "noisy" else None)
        bottom += share
    _style(bars, "share of training views per weighting group")
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)  # below: bars fill the axes
    for condition in _conditions(epochs):
        # NaN where an epoch saw no view of this condition: a gap in the line, not a false 0.
        totals = [_group_total(h, f".{condition}") for h in epochs]
        share = [h.get(f"group_noisy.{condition}", 0) / t if t else np.nan for h, t in zip(epochs, totals)]
        lines.plot(x, share, marker="o", label=condition)
    _style(lines, "noisy share per condition")
    if lines.get_legend_handles_labels()[0]:
        lines.legend(loc="best", fontsize=8)
    return _save(fig, path)


def _group_total(metrics: dict, suffix: str = "") -> float:
    """Sum of the four groups' counts (of one condition with suffix '.<condition>'); missing keys count 0."""
    return float(sum(metrics.get(f"group_{g}{suffix}", 0) for g in GROUPS))


def _conditions(history: list[dict]) -> list[str]:
    """The conditions named by any per-condition group count, sorted."""
    prefixes = tuple(f"group_{g}." for g in GROUPS)
    return sorted({k.split(".", 1)[1] for h in history for k in h if k.startswith(prefixes)})


def _style(ax, title: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.grid(alpha=0.3)
    ax.set_title(title)


def _no_rows(path, what: str) -> Path:
    # An empty figure still gets written, so a run's artifacts always hold the file a person looks for.
    fig, ax = plt.subplots(figsize=(4, 2), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: no rows", ha="center", va="center")
    return _save(fig, path)
