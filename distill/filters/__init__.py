"""Filters for teacher traces: format checks, verification, deduplication, the filter stage."""

from distill.filters.stage import run_filter
from distill.grading.verify import Verdict, verify, verify_many

__all__ = ["Verdict", "run_filter", "verify", "verify_many"]
