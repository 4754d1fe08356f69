"""`structvpr eval`: recall@N of any model reference on any split of eval shards, with plots."""

from __future__ import annotations

import math
from pathlib import Path

from structvpr.config import ConfigError
from structvpr.datasets.shards.manifest import Manifest
from structvpr.platform.evaluation.evaluate import evaluate_branch, write_eval_artifacts
from structvpr.platform.store.references import check_fits_shards, load_branch


def run_eval(model_ref: str, shards: str, split: str = "test", radius_m: float = 25.0, out: str | None = None,
             progress: bool = True) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not math.isfinite(radius_m) or radius_m <= 0:
        raise ConfigError(f"--radius must be a positive number of metres, got {radius_m:g}")
    manifest = Manifest.load(shards)
    for role in ("database", "queries"):  # a missing split fails here, not after the other was encoded
        manifest.shard_paths(split, role)
    model, trained_on = load_branch(model_ref, device)
    check_fits_shards(model, trained_on, manifest, "model")
    report, db, queries = evaluate_branch(model, shards, split, device, radius_m=radius_m, progress=progress)
    print_report(report, split, len(db.keys))
    if out:
        write_outputs(Path(out), report, shards, split, queries)
    return 0


def print_report(report, split: str, db_size: int) -> None:
    print(f"{split}: {report.num_queries} queries against {db_size} database images, positives within {report.radius_m} m")
    header = "condition".ljust(14) + "".join(f"R@{n}".rjust(8) for n in report.n_values) + "  queries"
    print(header)
    rows = [("overall", report.recall, report.num_queries)]
    rows += [(c, r, report.queries_per_condition.get(c, 0)) for c, r in sorted(report.recall_per_condition.items())]
    for name, recall, count in rows:
        print(name.ljust(14) + "".join(f"{recall[n]:8.1f}" for n in report.n_values) + f"  {count:7d}")
    if report.num_without_positives:
        print(f"{report.num_without_positives} queries had no database image within {report.radius_m} m (not counted)")


def write_outputs(out: Path, report, shards: str, split: str, queries) -> None:
    write_eval_artifacts(out, report, shards, split, len(queries.keys))
    print(f"wrote {out}/metrics.json, recall_at_n.png, retrievals.png")
