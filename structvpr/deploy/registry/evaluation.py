"""`promote --evaluate`: test recall@1/5/10 of registered versions on a shard build, recorded as tags on each."""

from __future__ import annotations

import math
import time
from pathlib import Path

from structvpr.deploy.registry.records import (CHAMPION, RECALL_NS, Evaluation, RegistryError, VersionRecord, fmt,
                                               read_version, utc_text, version_by_alias)

RADIUS_M = 25.0  # the benchmark's positive radius; part of what "the same benchmark" means


def evaluate_for_promotion(client, uri: str, name: str, version: str, shards: str) -> list[Evaluation]:
    """The candidate always; the champion too when its record is not on these shards' manifest."""
    from structvpr.datasets.shards.manifest import Manifest

    manifest = Manifest.load(shards)
    for role in ("database", "queries"):  # a build without a test split fails here, before any model is loaded
        manifest.shard_paths("test", role)
    targets = [read_version(client, name, version)]
    champion = version_by_alias(client, name, CHAMPION)
    if champion and champion.version != version and (champion.evaluation is None
                                                      or champion.evaluation.manifest != manifest.hash):
        targets.append(champion)
    return [evaluate_version(client, uri, record, shards, manifest) for record in targets]


def evaluate_version(client, uri: str, record: VersionRecord, shards: str, manifest) -> Evaluation:
    import mlflow
    import torch

    from structvpr.platform.evaluation.evaluate import evaluate_branch
    from structvpr.platform.store.references import check_fits_shards, load_branch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mlflow.set_tracking_uri(uri)  # load_branch reads models:/ through MLflow's global tracking URI
    model, trained_on = load_branch(f"models:/{record.name}/{record.version}", device)
    check_fits_shards(model, trained_on, manifest, "model")
    report, _, _ = evaluate_branch(model, shards, "test", device, n_values=RECALL_NS, radius_m=RADIUS_M)
    if not all(math.isfinite(report.recall[n]) for n in RECALL_NS):
        raise RegistryError(f"{shards}: no test query has a database image within {RADIUS_M:g} m; "
                            "recall is undefined, nothing recorded")
    evaluation = Evaluation(manifest.hash, {n: float(report.recall[n]) for n in RECALL_NS},
                            str(Path(shards).resolve()), utc_text(time.time()))
    for key, value in evaluation.tags().items():
        client.set_model_version_tag(record.name, record.version, key, value)
    print(f"{record.label}: test R@1 {fmt(evaluation.recall[1])}, R@5 {fmt(evaluation.recall[5])}, "
          f"R@10 {fmt(evaluation.recall[10])} on {shards} (manifest {manifest.hash[:12]}), recorded on the version")
    return evaluation
