"""Evaluation: benchmarks, scoring with confidence intervals, retention; `run_evaluate` is the stage."""

from distill.eval.runner import run_evaluate

__all__ = ["run_evaluate"]
