"""Shared by the toy benchmarks: the eval split of a toy task family as problem dicts."""

from distill.records import record_id
from distill.toy.tasks import make_tasks


def eval_problems(family: str, limit: int | None, axis: str) -> list[dict]:
    """The benchmark `toy_<family>`: the eval split with a fixed seed, so every model is graded
    on the same tasks and none of them is a training prompt. The task's subcategory
    (`carries=2`, or an operator name) becomes its category on `axis`."""
    tasks = make_tasks(family, limit, seed=1234, split="eval")
    for t in tasks:
        t["id"] = f"toy_{family}/" + record_id(t["messages"][0]["content"])[:12]
        t["source"] = f"toy_{family}"
        t.setdefault("entry_point", None)
        t["categories"] = {axis: t["subcategory"].removeprefix(f"{axis}=")}
    return tasks
