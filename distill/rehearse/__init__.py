"""Rehearsal of a recipe offline: local copies of the Hub datasets it reads, in their Hub
layout, and the answer key a teacher stand-in answers from (hub_layouts.py)."""
