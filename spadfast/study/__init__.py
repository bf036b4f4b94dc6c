"""Studies: the ablation runner, held-out splits and folds, run-level statistics, the steps x members grid."""
