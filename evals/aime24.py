"""AIME 2024 (HuggingFaceH4/aime_2024, train: 30 problems of contests I and II); integer
answers, graded with math-verify on the last \\boxed{}; category: the contest."""

from distill.grading.benchmarks import Benchmark
from evals._aime import PROMPT, load_aime

HUB = "HuggingFaceH4/aime_2024"


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    return load_aime("aime24", HUB, data_file, limit, split="train")


# 30 questions: one sample per question gives an interval of +-17 points; open-r1 takes 64.
BENCHMARK = Benchmark(name="aime24", version="aime-2024", category="reasoning", hub=HUB,
                      load=load, scorer="math", prompt=PROMPT, categories=("contest",),
                      samples=64)
