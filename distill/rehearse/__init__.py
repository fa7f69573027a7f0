"""Rehearsals of the shipped recipes: the recipe as written, shrunk only in size, end to end on
a CPU and offline (real tokenizers and templates, real dataset layouts, the real architecture at
a tiny width, a teacher stand-in speaking the endpoint's dialect)."""
