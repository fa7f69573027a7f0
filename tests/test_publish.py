"""The publish stage from a synthetic eval stage: tables, plot and a model card that loads back."""

import csv

import pytest
from huggingface_hub import ModelCard

from distill.config import Recipe
from distill.errors import InputError
from distill.eval import metrics
from distill.publish import run_publish
from distill.records import Stage

# Ten questions; the student answers a subset of what the teacher answers.
CORRECT = {"teacher": set(range(8)), "base": {0, 9}, "student": set(range(6))}
NAMES = {"teacher": "big-moe", "base": "small-base", "student": "tiny-distilled"}


def recipe() -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "tiny"},
        "prompts": {"sources": [{"name": "arith", "kind": "jsonl", "category": "reasoning",
                                 "path": "data/arith.jsonl"}]},
        "teacher": {"model": "big-moe"},
        "train": {"student": "small-base"},
        "eval": {"benchmarks": ["toy_arith", "toy_code"]},
        "publish": {"hub_repo": "org/tiny-distilled", "license": "apache-2.0"},
    })


def _write_eval(run_dir, with_questions=True):
    stage = Stage(run_dir, "eval")
    scores, questions = [], []
    with stage.writer() as w:
        for role, right in CORRECT.items():
            for i in range(10):
                sub = "easy" if i < 5 else "hard"
                w.write({"id": f"{role}-{i}", "role": role, "model": NAMES[role],
                         "benchmark": "toy_arith", "version": "1", "task_id": f"q{i}",
                         "category": "reasoning", "subcategory": sub, "sample": 0,
                         "correct": i in right, "reason": "", "content": "", "reasoning": "",
                         "finish_reason": "stop"})
                questions.append({"role": role, "model": NAMES[role], "benchmark": "toy_arith",
                                  "category": "reasoning", "subcategory": sub,
                                  "task_id": f"q{i}", "score": float(i in right), "samples": 1})
            for cat, ids in (("reasoning", range(10)), ("reasoning/easy", range(5)),
                             ("reasoning/hard", range(5, 10))):
                est = metrics.score_interval([[i in right] for i in ids])
                scores.append({"model": NAMES[role], "role": role, "benchmark": "toy_arith",
                               "category": cat, "metric": "pass@1", "score": est.value,
                               "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n})
            # A benchmark the teacher fails entirely: retention is undefined there.
            scores.append({"model": NAMES[role], "role": role, "benchmark": "toy_code",
                           "category": "coding", "metric": "pass@1",
                           "score": 0.0 if role == "teacher" else 0.1, "ci_low": 0.0,
                           "ci_high": 0.3, "n": 10})
    stage.write_json("scores.json", scores)
    if with_questions:
        stage.write_json("questions.json", questions)
    stage.complete()


@pytest.fixture
def report(tmp_path):
    _write_eval(tmp_path)
    Stage(tmp_path, "filter").write_json("counts.json", {"kept": 42, "failed": {"verify": 7}})
    return run_publish(recipe(), tmp_path)


def _csv(report):
    with open(report / "leaderboard.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_csv_has_the_contract_columns_and_retention(report):
    columns, rows = _csv(report)
    assert columns == ["model", "role", "benchmark", "category", "metric", "score", "ci_low",
                       "ci_high", "n", "retention"]
    assert len(rows) == 3 * 4
    by = {(r["role"], r["benchmark"], r["category"]): r for r in rows}
    assert float(by[("teacher", "toy_arith", "reasoning")]["retention"]) == 1.0
    assert float(by[("student", "toy_arith", "reasoning")]["retention"]) == pytest.approx(0.75)
    assert float(by[("base", "toy_arith", "reasoning")]["retention"]) == pytest.approx(0.25)
    # easy: teacher 5/5, student 5/5; hard: teacher 3/5, student 1/5.
    assert float(by[("student", "toy_arith", "reasoning/easy")]["retention"]) == pytest.approx(1.0)
    assert float(by[("student", "toy_arith", "reasoning/hard")]["retention"]) == \
        pytest.approx(1 / 3, rel=1e-5)
    assert by[("student", "toy_code", "coding")]["retention"] == ""
    assert by[("student", "toy_arith", "reasoning")]["model"] == "tiny-distilled"
    assert by[("student", "toy_arith", "reasoning")]["n"] == "10"
    assert float(by[("student", "toy_arith", "reasoning")]["ci_low"]) < 0.6


def test_markdown_and_html_tables(report):
    md = (report / "leaderboard.md").read_text()
    assert "| model | role | benchmark |" in md and "| tiny-distilled | student | toy_arith |" in md
    assert "0.75" in md
    page = (report / "leaderboard.html").read_text()
    assert '<table class="sortable">' in page and page.count("<tr>") == 1 + 12
    assert "addEventListener(\"click\"" in page and "<script src" not in page
    assert "<th>retention</th>" in page


def test_retention_plot_is_a_png(report):
    data = (report / "retention.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_model_card_loads_back_with_eval_results(report):
    card = ModelCard.load(report / "README.md")
    results = card.data.eval_results
    assert {r.dataset_name for r in results} == {"toy_arith", "toy_code"}
    arith = next(r for r in results if r.dataset_name == "toy_arith")
    assert arith.metric_type == "pass@1" and arith.metric_value == pytest.approx(0.6)
    assert card.data.base_model == "small-base" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["data/arith.jsonl"]
    assert "big-moe" in card.text and '"kept": 42' in card.text
    assert "Retention" in card.text and "0.75 [" in card.text
    assert "Intended use" in card.text
    # Student 6/10 vs base 2/10 on the same questions: +40 points.
    assert "+40.0 [" in card.text
    assert Stage(report.parent, "publish").is_complete()


def test_publish_without_per_question_scores_still_writes_the_report(tmp_path):
    _write_eval(tmp_path, with_questions=False)
    report = run_publish(recipe(), tmp_path)
    _, rows = _csv(report)
    assert len(rows) == 12 and (report / "retention.png").stat().st_size > 0
    assert not (tmp_path / "filter").exists()
    assert ModelCard.load(report / "README.md").data.eval_results


def test_publish_needs_a_complete_eval(tmp_path):
    with pytest.raises(InputError, match="eval stage is not complete"):
        run_publish(recipe(), tmp_path)
    assert not Stage(tmp_path, "publish").is_complete()


def test_publish_reads_what_the_eval_stage_writes(monkeypatch, tmp_path):
    from test_evaluate import World, recipe as eval_recipe

    Stage(tmp_path, "train").complete(model="train/model")
    World().install(monkeypatch)
    from distill.eval import run_evaluate
    run_evaluate(eval_recipe(samples=2), tmp_path)
    report = run_publish(eval_recipe(samples=2), tmp_path)
    _, rows = _csv(report)
    by = {(r["role"], r["category"], r["metric"]): r for r in rows}
    # The distilled stand-in keeps 4 of the teacher's 6 questions; the base none.
    assert float(by[("student", "reasoning", "pass@1")]["retention"]) == pytest.approx(2 / 3,
                                                                                     rel=1e-5)
    assert float(by[("base", "reasoning", "pass@1")]["retention"]) == 0.0
    assert ("student", "reasoning", "pass@2") in by
    card = ModelCard.load(report / "README.md")
    assert {r.metric_type for r in card.data.eval_results} == {"pass@1", "pass@2", "maj@2"}
    assert "0.67 [" in card.text
