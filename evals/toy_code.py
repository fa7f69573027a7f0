"""Toy code benchmark: the held-out eval split of the synthetic 'code' task family
(distill.toy.tasks), fixed seed, so every model is graded on the same tasks; categories: the
operator the function applies."""

from distill.grading.benchmarks import Benchmark
from evals._toy import eval_problems


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    return eval_problems("code", limit, axis="op")


BENCHMARK = Benchmark(name="toy_code", version="1", category="coding", hub="(synthetic)",
                      load=load, scorer="code",
                      prompt="Write a Python function f(x) that returns {description}.",
                      categories=("op",), temperature=0.0, max_tokens=512)
