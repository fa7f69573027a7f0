"""Toy arith benchmark: the held-out eval split of the synthetic 'arith' task family
(distill.toy.tasks), fixed seed, so every model is graded on the same tasks; categories: the
number of carries."""

from distill.grading.benchmarks import Benchmark
from evals._toy import eval_problems


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    return eval_problems("arith", limit, axis="carries")


BENCHMARK = Benchmark(name="toy_arith", version="1", category="reasoning", hub="(synthetic)",
                      load=load, scorer="math", prompt="What is {a}+{b}?",
                      categories=("carries",), temperature=0.0, max_tokens=512)
