"""Sweeps: several variants of one recipe, each a run directory, and the map of what each kept."""
