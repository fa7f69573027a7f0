"""Toy mult benchmark: the held-out eval split of the synthetic 'mult' task family
(distill.toy.tasks), fixed seed, so every model is graded on the same tasks; categories: the
number of digits of the multiplicand (the number of steps of the trace)."""

from distill.grading.benchmarks import Benchmark
from evals._toy import eval_problems


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    return eval_problems("mult", limit, axis="digits")


BENCHMARK = Benchmark(name="toy_mult", version="1", category="reasoning", hub="(synthetic)",
                      load=load, scorer="math", prompt="What is {a}*{b}?",
                      categories=("digits",), temperature=0.0, max_tokens=512)
