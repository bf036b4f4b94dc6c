"""Training: ``SPADTrainer`` and its run log."""
