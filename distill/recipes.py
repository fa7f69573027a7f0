"""Reading a recipe as every door does (the CLI, the Prefect flows, rehearse): the file or the
name of a shipped recipe, its overrides, and the checks that need the benchmark registry."""

from __future__ import annotations

from distill.config import Recipe, load_recipe, recipe_path


def read_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """The recipe with its overrides, checked, as every door reads it (the CLI, the Prefect
    flows, rehearse): distill.config rejects the names it can list (benchmarks, filters, toy
    tasks, schedulers, ...); a benchmark's loader options need the benchmark, checked here."""
    from distill.errors import InputError
    from distill.grading.benchmarks import check_recipe_options

    path = recipe_path(name_or_path)
    cfg = load_recipe(path, overrides or [])
    try:
        check_recipe_options(cfg)
    except InputError as e:
        e.file = e.file or str(path)
        raise
    return cfg
