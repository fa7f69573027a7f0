"""The filter's decontamination check is the one the prompts stage runs too: it lives in
distill/grading/decontaminate.py (below both stages); these names are that module's."""

from distill.grading.decontaminate import (  # noqa: F401
    Hit,
    Index,
    PromptChecker,
    load_benchmarks,
    prompt_text,
    template_literals,
)
