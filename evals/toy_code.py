"""Toy code benchmark: the held-out eval split of the synthetic 'code' task family
(distill.toy.tasks), fixed seed, so every model is graded on the same tasks."""

from distill.eval.benchmark import Benchmark
from distill.records import record_id
from distill.toy.tasks import make_tasks


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    tasks = make_tasks("code", limit, seed=1234, split="eval")
    for t in tasks:
        t["id"] = "toy_code/" + record_id(t["messages"][0]["content"])[:12]
        t["source"] = "toy_code"
        t.setdefault("entry_point", None)
    return tasks


BENCHMARK = Benchmark(name="toy_code", version="1", category="coding",
                      hub="(synthetic)", load=load, temperature=0.0, max_tokens=512)
