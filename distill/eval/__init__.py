"""Evaluation: answers from every model of the recipe, scoring with confidence intervals,
retention; `run_evaluate` is the stage.

May import: the contract (config, records, models, chat, positions), grading, serving, teacher,
plan, toy. Not another stage."""

from distill.eval.runner import run_evaluate

__all__ = ["run_evaluate"]
