"""Scoring: metrics and their registry, folder evaluation, trivial baselines, the HTML report, plots, pictures."""
