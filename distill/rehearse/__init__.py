"""Rehearsals of the shipped recipes: the recipe as written, shrunk only in size, end to end on
a CPU and offline (real tokenizers and templates, real dataset layouts, the real architecture at
a tiny width, a teacher stand-in speaking the endpoint's dialect).

run.py: `distill rehearse` and `distill pilot`; models.py: the tiny students; hub_layouts.py:
local copies of the recipes' Hub datasets; vllm_shim.py: `vllm serve` on a machine without it.

May import: everything but the CLI (it runs the pipeline).
"""
