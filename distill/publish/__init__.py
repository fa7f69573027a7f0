"""Publishing: leaderboard tables, plots and the model card; `run_publish` is the stage."""

from distill.publish.stage import run_publish

__all__ = ["run_publish"]
