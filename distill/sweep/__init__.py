"""Sweeps: variants of one recipe over a grid of values, each a run directory, sharing the
stages they agree on (plan.py, run.py), and the distillation map of what each kept (report.py,
map_plots.py)."""
