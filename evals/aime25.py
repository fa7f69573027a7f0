"""AIME 2025 (yentinglin/aime_2025, train: 30 problems of contests I and II); integer answers,
graded with math-verify on the last \\boxed{}; category: the contest."""

from distill.grading.benchmarks import Benchmark
from evals._aime import PROMPT, load_aime

HUB = "yentinglin/aime_2025"


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    return load_aime("aime25", HUB, data_file, limit, split="train")


BENCHMARK = Benchmark(name="aime25", version="aime-2025", category="reasoning", hub=HUB,
                      load=load, scorer="math", prompt=PROMPT, categories=("contest",),
                      samples=64)
