"""Decontamination in the prompts stage: prompts that overlap a benchmark never reach the
teacher (the stand-in's request log), the report names each hit, a benchmark not on hand is
named as not checked, and a change of the check's settings checks the prompts on record again."""

import json
from pathlib import Path

import pytest

from distill.config import Recipe
from distill.generate import run_generate
from distill.prompts import run_prompts
from distill.records import RunDir
from teacher_standin import Running, StandIn

DATA = Path(__file__).parents[1].parent / "shared" / "data"
GSM8K = DATA / "gsm8k" / "test.jsonl"
needs_gsm8k = pytest.mark.skipif(not GSM8K.is_file(), reason=f"data not found at {DATA}")

TEMPLATE = "Solve this problem.\n\n{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."
CLEAN = ["A baker makes 12 loaves an hour for 5 hours and gives 7 of them to a cafe. How many "
         "loaves does she keep?",
         "Tom has 3 boxes with 14 marbles in each box. He loses 9 marbles on the way to school. "
         "How many marbles does he have left?",
         "A cyclist rides 18 km on Monday and twice as far on Tuesday. How far does she ride in "
         "the two days together?"]


def _gsm8k(n: int) -> list[dict]:
    return [json.loads(line) for line in GSM8K.read_text().splitlines()[:n]]


def _source(tmp_path: Path) -> tuple[Path, list[str]]:
    """A prompt file of the clean problems and three GSM8K test items, one of them copied in
    capitals with its punctuation moved (a copy all the same)."""
    leaked = [r["question"] for r in _gsm8k(3)]
    leaked[1] = leaked[1].upper().replace(".", " .")
    rows = [{"q": q, "a": "1"} for q in [CLEAN[0], leaked[0], CLEAN[1], leaked[1], leaked[2], CLEAN[2]]]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, leaked


def _recipe(path: Path, base_url: str | None = None, decontaminate=("gsm8k", "livecodebench"),
            data_files: dict | None = None, count: int | None = None) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "word_problems", "kind": "jsonl", "path": str(path),
                                 "category": "reasoning", "prompt_field": "q", "answer_field": "a",
                                 "prompt_template": TEMPLATE, "count": count}]},
        "teacher": {"model": "standin", "base_url": base_url},
        "generate": {"samples_per_prompt": 1, "max_tokens": 8, "max_retries": 1},
        "filter": {"decontaminate": list(decontaminate), "workers": 1},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"],
                 "data_files": {"gsm8k": str(GSM8K)} if data_files is None else data_files},
    })


def _asked(problem: str) -> str:
    return TEMPLATE.format(prompt=problem)


@needs_gsm8k
def test_contaminated_prompts_never_reach_the_teacher(tmp_path):
    path, leaked = _source(tmp_path)
    app = StandIn()
    with Running(app) as s:
        cfg = _recipe(path, s.url)
        assert run_prompts(cfg, tmp_path / "run") == {"word_problems": 3}
        run_generate(cfg, tmp_path / "run")
    asked = [key for key, _, _ in app.stats.log]
    assert sorted(asked) == sorted(_asked(q) for q in CLEAN)
    assert not {_asked(q) for q in leaked} & set(asked)

    stage = RunDir(tmp_path / "run").prompts
    ids = {r["messages"][-1]["content"]: r["id"] for r in stage.read()}
    assert set(ids) == {_asked(q) for q in CLEAN}
    report = stage.read_json("decontamination.json")
    assert report["checked"] == {"gsm8k": 1319}
    assert report["skipped"]["livecodebench"].startswith("not on hand")   # the tests are offline
    assert sorted((h["source"], h["benchmark"], h["item"], h["method"]) for h in report["hits"]) \
        == [("word_problems", "gsm8k", f"gsm8k/{i}", "ngram") for i in (0, 1, 2)]
    assert all(h["prompt_id"] not in ids.values() and h["evidence"] for h in report["hits"])
    assert len({h["prompt_id"] for h in report["hits"]}) == 3
    assert report["by_source"] == {"word_problems": 3}
    manifest = stage.manifest()
    assert manifest["contaminated"] == {"word_problems": 3}
    assert manifest["sources"] == {"word_problems": 3} and manifest["records"] == 3


@needs_gsm8k
def test_count_caps_the_clean_prompts_and_a_rerun_keeps_the_report(tmp_path, monkeypatch):
    path, _ = _source(tmp_path)
    run = tmp_path / "run"
    # Two of the first three rows are clean: the copy between them does not use up `count`.
    assert run_prompts(_recipe(path, count=2), run) == {"word_problems": 2}
    stage = RunDir(run).prompts
    assert {r["messages"][-1]["content"] for r in stage.read()} == {_asked(q) for q in CLEAN[:2]}
    first = stage.read_json("decontamination.json")
    assert [h["item"] for h in first["hits"]] == ["gsm8k/0"]

    # Same rows, same check: the source is not read and no index is built; the report stands.
    from distill.grading.decontaminate import PromptChecker

    def no_index(cls, cfg):
        raise AssertionError("the index was built for a re-run with nothing to check")
    monkeypatch.setattr(PromptChecker, "from_recipe", classmethod(no_index))
    run_prompts(_recipe(path, count=2), run)
    assert stage.read_json("decontamination.json") == first
    assert stage.manifest()["contaminated"] == {"word_problems": 1}


@needs_gsm8k
def test_new_check_settings_check_the_prompts_on_record_again(tmp_path):
    path, leaked = _source(tmp_path)
    run = tmp_path / "run"
    stage = RunDir(run).prompts

    def asked() -> set[str]:
        return {r["messages"][-1]["content"] for r in stage.read()}

    # Checked against a benchmark the copies are not from: every prompt is written.
    assert run_prompts(_recipe(path, decontaminate=["toy_arith"]), run) == {"word_problems": 6}
    assert stage.read_json("decontamination.json")["hits"] == []
    # GSM8K added: the copies on record are dropped and named (their traces are no longer
    # current); taken off the list again, they come back.
    assert run_prompts(_recipe(path), run) == {"word_problems": 3}
    assert asked() == {_asked(q) for q in CLEAN}
    assert len(stage.read_json("decontamination.json")["hits"]) == 3
    assert stage.manifest()["contaminated"] == {"word_problems": 3}
    run_prompts(_recipe(path, decontaminate=["toy_arith"]), run)
    assert asked() == {_asked(q) for q in CLEAN + leaked}
    assert stage.manifest()["contaminated"] == {}


def test_a_benchmark_not_on_hand_is_named_as_not_checked(tmp_path):
    """No local file and no Hub (the tests run offline): nothing is dropped, and the report
    says that GSM8K was not checked, and why."""
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"q": q, "a": "1"}) + "\n" for q in CLEAN))
    run_prompts(_recipe(path, decontaminate=["gsm8k"], data_files={}), tmp_path / "run")
    stage = RunDir(tmp_path / "run").prompts
    report = stage.read_json("decontamination.json")
    assert report["checked"] == {} and report["hits"] == []
    assert report["skipped"]["gsm8k"].startswith(
        "not on hand (no local file, and the Hub dataset openai/gsm8k cannot be read")
    assert stage.manifest()["sources"] == {"word_problems": 3}


def test_decontaminate_none_checks_nothing_and_leaves_no_report(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps({"q": q, "a": "1"}) + "\n" for q in CLEAN))
    run = tmp_path / "run"
    run_prompts(_recipe(path, decontaminate=["toy_arith"], data_files={}), run)
    stage = RunDir(run).prompts
    assert (stage.path / "decontamination.json").exists()
    cfg = _recipe(path, data_files={})
    cfg.filter.decontaminate = "none"
    run_prompts(cfg, run)
    assert not (stage.path / "decontamination.json").exists()
    assert stage.manifest()["contaminated"] == {} and stage.manifest()["records"] == 3
