"""A fold teacher's verdict on the training views of its fold: r_T, the similarity of the positive and
of the hardest negative, ranked against the whole training gallery encoded by that same teacher."""

from __future__ import annotations

import torch
from torch import nn

from structvpr.platform.jobs.gallery import encode_views
from structvpr.platform.losses.weighting import rank_of_true_positive
from structvpr.platform.ranking.folds import TrainingView
from structvpr.platform.ranking.table import RankRow


@torch.no_grad()
def rank_fold(teacher: nn.Module, shard_dir: str, views: list[TrainingView], fold_of: dict[int, int], fold: int,
              device="cpu") -> list[RankRow]:
    """Rows of the ranks table for the views whose place is in `fold`, ranked by `teacher`."""
    descs, keys = encode_views({"teacher": teacher}, shard_dir, device)
    gallery = descs["teacher"].to(device)
    row_of = {(place, view): i for i, (place, view, _) in enumerate(keys)}
    labels = torch.tensor([place for place, _, _ in keys], device=device)
    mine = [v for v in views if fold_of[v.place] == fold]
    if not mine:
        return []
    rows = torch.tensor([row_of[(v.place, v.view)] for v in mine], device=device)
    r_t = rank_of_true_positive(gallery[rows], labels[rows], gallery, labels, exclude_self_ids=rows)
    sim_pos, sim_neg, top = _best_positive_and_negative(gallery, labels, rows)
    key_of = {v.place: v.key for v in views}
    return [RankRow(v.key, v.place, v.view, v.condition, fold, int(r), float(p), float(n),
                    key_of[keys[int(t)][0]], keys[int(t)][1])
            for v, r, p, n, t in zip(mine, r_t.tolist(), sim_pos.tolist(), sim_neg.tolist(), top.tolist())]


def _best_positive_and_negative(gallery: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, chunk: int = 1024):
    """Per query row: best same-place similarity (itself excluded; -inf if none), best other-place similarity,
    and the gallery row of that hardest negative. Queries go in chunks, so no [N, G] matrix is held at once."""
    pos, neg, top = [], [], []
    for start in range(0, rows.shape[0], chunk):
        ids = rows[start:start + chunk]
        sim = gallery[ids] @ gallery.T
        same = labels[ids].unsqueeze(1) == labels.unsqueeze(0)
        sim_self_out = sim.scatter(1, ids.unsqueeze(1), float("-inf"))
        pos.append(torch.where(same, sim_self_out, float("-inf")).amax(dim=1))
        best_neg = torch.where(same, float("-inf"), sim).max(dim=1)
        neg.append(best_neg.values)
        top.append(best_neg.indices)
    return torch.cat(pos), torch.cat(neg), torch.cat(top)
