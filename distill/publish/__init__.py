"""Publishing: leaderboard tables, plots and the model card; `run_publish` is the stage.

May import: every layer below it (the stages' own modules included: it reports on them)."""

from distill.publish.stage import run_publish

__all__ = ["run_publish"]
