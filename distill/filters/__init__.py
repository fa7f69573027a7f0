"""Filters for teacher traces: format checks, deduplication, decontamination, the filter stage
(verification itself is distill.grading, shared with evaluation).

May import: the contract (config, records, models, chat), grading, toy. Not another stage."""

from distill.filters.stage import run_filter

__all__ = ["run_filter"]
