"""Out-of-fold teacher ranks: spatial folds, fold teacher jobs, the ranks table and its plots (docs/METHOD.md)."""
