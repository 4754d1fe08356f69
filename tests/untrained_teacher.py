"""A teacher checkpoint with random weights, for tests whose subject is not the teacher's training.

It is saved as a training job saves one (`save_state`), so everything that reads a teacher reads it:
the recipe checks, `load_branch`, a student's KD. Making it takes a second; training one on Ray Train
takes about half a minute (docs/TESTING.md).
"""

from __future__ import annotations

from pathlib import Path

from structvpr.datasets.shards.manifest import Manifest


def save_untrained_teacher(folder: Path, manifest: Manifest, size: tuple[int, int] | None = None,
                           ranks: bool = True) -> Path:
    """A teacher checkpoint recorded as trained at `size` (default: the shards'), with a ranks table beside it
    when `ranks` (rows for every training view: out-of-fold readers accept it)."""
    from structvpr.platform.models import create_branch
    from structvpr.platform.ranking.folds import training_views
    from structvpr.platform.ranking.table import FILE_NAME, RankRow, RanksTable
    from structvpr.platform.store.checkpoint import save_state

    width, height = size or manifest.image_size
    teacher = create_branch("test_resnet", manifest.num_categories, "gem", 16, image_hw=(height, width),
                            num_classes=manifest.num_categories)
    checkpoint = folder / "checkpoint_0"
    checkpoint.mkdir(parents=True)
    save_state(checkpoint, teacher, None, None, 1, {"trained_on": {"image_size": [width, height], "kind": "teacher"}})
    if ranks:
        rows = [RankRow(v.key, v.place, v.view, v.condition, v.place % 3, 1 + v.view, 0.9, 0.5, v.key, v.view)
                for v in training_views(manifest)]
        RanksTable(manifest.hash, rows).write(folder / FILE_NAME)
    return checkpoint
