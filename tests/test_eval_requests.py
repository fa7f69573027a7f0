"""The eval stage's requests over the real client, against stand-in servers on 127.0.0.1:
how long it waits, how it splits samples into requests, what it does with a server that
returns fewer choices than asked, and what it says about requests that failed."""

import json

import pytest

from distill.config import Recipe
from distill.eval import run_evaluate
from distill.records import Stage
from teacher_standin import Running, StandIn


class Recording(StandIn):
    """A stand-in that records (model, n) of every request; with `one_choice` it answers one
    choice whatever `n` is, as DeepSeek's deepseek-reasoner does."""

    def __init__(self, one_choice: bool = False, **kw):
        super().__init__(**kw)
        self.one_choice, self.asked = one_choice, []

    def completion(self, body: dict, outcome: str) -> dict:
        self.asked.append((body.get("model"), int(body.get("n") or 1)))
        return super().completion({**body, "n": 1} if self.one_choice else body, outcome)


class ShortContext(StandIn):
    """An API with a 1,000-token context that refuses longer requests as vLLM does."""

    async def route(self, method, path, headers, raw, writer):
        if method == "POST" and json.loads(raw).get("max_tokens", 0) > 1000:
            self.stats.requests += 1
            self._send(writer, 400, {"error": {
                "message": "'max_tokens' or 'max_completion_tokens' is too large: 32768. This "
                           "model's maximum context length is 1000 tokens and your request has "
                           "24 input tokens (32768 > 1000 - 24).",
                "type": "BadRequestError", "param": None, "code": 400}})
            await writer.drain()
            return True
        return await super().route(method, path, headers, raw, writer)


def recipe(teacher_url: str, students_url: str, eval_=None, generate=None) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "tiny"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning",
                                 "family": "arith"}]},
        "teacher": {"model": "api-teacher", "base_url": teacher_url},
        "generate": generate or {},
        "train": {"student": "org/base"},
        "eval": {"benchmarks": ["toy_arith"], "samples": 1, "limit": 2, **(eval_ or {})},
    })


@pytest.fixture
def run_dir(tmp_path):
    Stage(tmp_path, "train").complete(model="train/model")
    return tmp_path


def test_missing_samples_are_asked_again_and_requests_split_as_the_recipe_says(run_dir):
    """An API that ignores `n` answers one choice per request: the teacher's 4 samples go out
    at most 2 per request (generate.max_n_per_request, the endpoint the generate stage uses),
    and what is still missing after a round is asked again until every sample exists."""
    with Running(Recording(one_choice=True, model="api-teacher")) as api, \
            Running(Recording(one_choice=True, model="students")) as students:
        run_evaluate(recipe(api.url, students.url, {"samples": 4, "base_url": students.url},
                            {"max_n_per_request": 2}), run_dir)
    assert {n for _, n in api.app.asked} == {1, 2} and len(api.app.asked) == 2 * 4
    # The students ask for every missing sample at once; rounds ask for 4, 3, 2, 1.
    per_model = {}
    for model, n in students.app.asked:
        per_model.setdefault(model, []).append(n)
    assert sorted(per_model["org/base"]) == [1, 1, 2, 2, 3, 3, 4, 4]
    records = list(Stage(run_dir, "eval").read())
    assert len(records) == 3 * 2 * 4
    for role in ("teacher", "base", "student"):
        for task in {r["task_id"] for r in records}:
            assert sorted(r["sample"] for r in records
                          if r["role"] == role and r["task_id"] == task) == [0, 1, 2, 3]
    assert Stage(run_dir, "eval").is_complete()


def test_eval_max_n_per_request_splits_every_models_requests(run_dir):
    with Running(Recording(model="api-teacher")) as api, Running(Recording(model="s")) as students:
        run_evaluate(recipe(api.url, students.url, {"samples": 3, "base_url": students.url,
                                                     "max_n_per_request": 1}), run_dir)
    assert {n for _, n in api.app.asked + students.app.asked} == {1}
    assert len(api.app.asked) == 2 * 3 and len(students.app.asked) == 2 * 2 * 3


def test_requests_wait_as_long_as_the_recipe_says_and_failures_are_reported(run_dir):
    """eval.timeout_s and eval.max_retries, not the client's defaults (600 s, 5 retries)."""
    with Running(StandIn(latency_s=1.5, model="api-teacher")) as slow, \
            Running(StandIn(model="s")) as students:
        cfg = recipe(slow.url, students.url, {"base_url": students.url, "timeout_s": 0.3,
                                              "max_retries": 1})
        with pytest.raises(RuntimeError, match=r"2 eval requests failed.*timeout after 0\.3 s"):
            run_evaluate(cfg, run_dir)
        assert slow.app.stats.requests == 2 * 2                  # each question, tried twice
    failed = Stage(run_dir, "eval").read_json("failed.json")
    assert len(failed) == 2
    assert all(f["role"] == "teacher" and f["model"] == "api-teacher" and f["kind"] == "timeout"
               and f["attempts"] == 2 and f["benchmark"] == "toy_arith" for f in failed)
    assert not Stage(run_dir, "eval").is_complete()
    # The students' samples are kept: a re-run asks only for the teacher's.
    assert {r["role"] for r in Stage(run_dir, "eval").read()} == {"base", "student"}


def test_a_refused_request_is_reported_with_the_servers_own_message(run_dir):
    with Running(ShortContext(model="api-teacher")) as api, Running(StandIn(model="s")) as students:
        cfg = recipe(api.url, students.url, {"base_url": students.url, "max_tokens": 32768})
        with pytest.raises(RuntimeError) as e:
            run_evaluate(cfg, run_dir)
    assert "http_400" in str(e.value) and "maximum context length is 1000 tokens" in str(e.value)
    failed = Stage(run_dir, "eval").read_json("failed.json")
    assert len(failed) == 2 and {f["role"] for f in failed} == {"teacher"}
    assert all(f["kind"] == "http_400" and f["attempts"] == 1 and "32768 > 1000 - 24" in f["reason"]
               for f in failed)
