"""Sweeps: variants of one recipe over a grid of values, sharing the stages they agree on, and
the distillation map that compares them (plan.py, run.py, report.py)."""
