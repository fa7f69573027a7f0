"""Toy arith benchmark: the held-out eval split of the synthetic 'arith' task family
(distill.toy.tasks), fixed seed, so every model is graded on the same tasks."""

from distill.eval.benchmark import Benchmark
from distill.records import record_id
from distill.toy.tasks import make_tasks


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    tasks = make_tasks("arith", limit, seed=1234, split="eval")
    for t in tasks:
        t["id"] = "toy_arith/" + record_id(t["messages"][0]["content"])[:12]
        t["source"] = "toy_arith"
        t.setdefault("entry_point", None)
    return tasks


BENCHMARK = Benchmark(name="toy_arith", version="1", category="reasoning",
                      hub="(synthetic)", load=load, temperature=0.0, max_tokens=512)
