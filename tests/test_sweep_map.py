"""The distillation map of a sweep (distill/sweep/report.py) over synthetic variant run
directories whose scores.json and questions.json come from the eval stage's own scoring."""

import csv
import json
from types import SimpleNamespace

import pytest

from distill.errors import InputError
from distill.eval import scoring
from distill.records import RunDir, Stage, write_json
from distill.sweep.report import Variant, map_rows, write_map

BENCH = SimpleNamespace(name="toy_arith", category="reasoning", scorer="math")
QUESTIONS = 40


def _labels(i: int) -> list[str]:
    # every other question also scored in a sub-category
    return ["reasoning", "reasoning/carries=2"] if i % 2 else ["reasoning"]


def _questions(right: set[int]) -> list[scoring.Question]:
    return [scoring.Question(f"q{i}", _labels(i), [i in right]) for i in range(QUESTIONS)]


def _write_variant(root, name, student_right, *, examples, seconds, usd_per_trace=0.01,
                   finished=True):
    """A run directory: teacher right on q0..q31, the student on `student_right`."""
    run = root / name
    run.mkdir(parents=True)
    if not finished:
        return run
    table = {("teacher", BENCH.name): _questions(set(range(32))),
             ("student", BENCH.name): _questions(student_right)}
    scores, questions = [], []
    for (role, _), qs in table.items():
        scores += scoring.score_rows(f"{role}-model", role, BENCH, qs)
        questions += [{"role": role, "model": f"{role}-model", "benchmark": BENCH.name,
                       "category": "reasoning", "subcategory": q.labels[1].split("/", 1)[1]
                       if len(q.labels) > 1 else None, "categories": q.labels,
                       "task_id": q.task_id, "score": sum(q.verdicts) / len(q.verdicts),
                       "samples": 1} for q in qs]
    scoring.add_retention(scores, table)
    ev = Stage(run, "eval")
    ev.write_json("scores.json", scores)
    ev.write_json("questions.json", questions)
    ev.complete()
    Stage(run, "train").complete(records=examples, method="sft", train_seconds=seconds)
    RunDir(run).dataset.complete(records=2000)
    write_json(RunDir(run).report / "economics.json",
               {"traces": {"basis": "recorded API cost", "total_usd": 2000 * usd_per_trace,
                           "kept": 2000, "usd_per_kept_trace": usd_per_trace}})
    return run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    ref_right = set(range(30))
    variants = [
        Variant("ref", _write_variant(root, "ref", ref_right, examples=2000, seconds=400),
                {"train.student": "toy:student-l", "train.max_examples": 2000}),
        Variant("same", _write_variant(root, "same", ref_right, examples=500, seconds=100),
                {"train.student": "toy:student-l", "train.max_examples": 500}),
        # lost q10..q29 of the reference's, gained q35
        Variant("worse", _write_variant(root, "worse", set(range(10)) | {35}, examples=500,
                                        seconds=60),
                {"train.student": "toy:student-s", "train.max_examples": 500}),
        Variant("late", _write_variant(root, "late", set(), examples=2000, seconds=0,
                                       finished=False),
                {"train.student": "toy:student-s", "train.max_examples": 2000}),
    ]
    return root, variants


def _row(rows, variant, category="reasoning"):
    return next(r for r in rows if r["variant"] == variant and r["category"] == category)


def test_rows_carry_the_scores_of_each_variant(sweep):
    root, variants = sweep
    rows = map_rows(variants, "ref")
    assert {r["variant"] for r in rows} == {"ref", "same", "worse"}
    assert len(rows) == 3 * 2  # three finished variants, two categories
    for v in variants[:3]:
        scores = json.loads((v.run_dir / "eval" / "scores.json").read_text())
        for s in scores:
            if s["role"] != "student":
                continue
            r = _row(rows, v.name, s["category"])
            assert (r["score"], r["ci_low"], r["ci_high"], r["n"]) == \
                (s["score"], s["ci_low"], s["ci_high"], s["n"])
            assert r["retention"] == s["retention"]
            assert r["retention_ci_low"] <= r["retention"] <= r["retention_ci_high"]
            assert r["train.max_examples"] == v.values["train.max_examples"]
    worse = _row(rows, "worse")
    assert worse["retention"] == pytest.approx(11 / 32)
    assert worse["teacher_score"] == pytest.approx(32 / 40)
    assert (worse["train_examples"], worse["usd_per_kept_trace"], worse["train_seconds"]) == \
        (500, 0.01, 60)
    assert worse["data_usd"] == pytest.approx(5.0)


def test_a_variant_like_the_reference_does_not_differ(sweep):
    rows = map_rows(sweep[1], "ref")
    for name in ("ref", "same"):
        for cat in ("reasoning", "reasoning/carries=2"):
            r = _row(rows, name, cat)
            assert r["difference"] == 0 and r["significant"] is False
            assert (r["gained"], r["lost"], r["p_value"]) == (0, 0, 1.0)


def test_a_variant_that_lost_questions_is_significant(sweep):
    rows = map_rows(sweep[1], "ref")
    r = _row(rows, "worse")
    assert (r["gained"], r["lost"], r["paired_n"]) == (1, 20, 40)
    assert r["difference"] == pytest.approx((11 - 30) / 40)
    assert r["significant"] is True and r["difference_ci_high"] < 0 and r["p_value"] < 0.001
    sub = _row(rows, "worse", "reasoning/carries=2")  # odd questions: lost 11..29, gained 35
    assert (sub["gained"], sub["lost"]) == (1, 10)


def test_the_map_files(sweep):
    root, variants = sweep
    md_path = write_map(root, variants, "ref")
    report = root / "report"
    assert md_path == report / "map.md"
    for name in ("map_train_student.png", "map_train_max_examples.png", "map_cost.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    md = md_path.read_text()
    assert "## Pending" in md and "`late`" in md
    assert "Reference: `ref`" in md and "## toy_arith: reasoning/carries=2" in md
    # the table's retention is the one in the variant's scores.json
    scores = json.loads((variants[2].run_dir / "eval" / "scores.json").read_text())
    ret = next(s["retention"] for s in scores if s["role"] == "student"
               and s["category"] == "reasoning")
    cells = next(c for c in ([c.strip() for c in l.strip("|").split("|")]
                             for l in md.splitlines() if l.startswith("| toy:student-s"))
                 if c[1] == "500")
    assert cells[5].startswith(f"{ret:.2f} [") and cells[6].endswith("] *")
    assert cells[8] == "+1/-20"
    assert "Below the reference at the 5% level: train.student=toy:student-s, " \
           "train.max_examples=500." in md
    assert "Not below the reference with the least data: train.student=toy:student-l, " \
           "train.max_examples=500, $5.00 of teacher data against the reference's $20.00" in md
    with open(report / "map.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and float(rows[0]["retention"]) == pytest.approx(30 / 32)
    doc = json.loads((report / "map.json").read_text())
    assert doc["swept"] == ["train.student", "train.max_examples"]
    assert [v["finished"] for v in doc["variants"]] == [True, True, True, False]
    assert len(doc["rows"]) == 6


def test_a_pending_reference_leaves_the_comparisons_empty(sweep, tmp_path):
    root, variants = sweep
    rows = map_rows(variants, "late")
    assert len(rows) == 6 and all(r["difference"] is None and r["significant"] is None
                                  for r in rows)
    md = write_map(tmp_path, variants, "late").read_text()
    assert "The reference is among them: no variant is compared with it yet." in md
    assert "differs from the reference" not in md and "Below the reference" not in md


def test_an_unknown_reference_is_named(sweep):
    with pytest.raises(InputError, match="the reference 'nope' is not a variant of this sweep; "
                                         "its variants: ref, same, worse, late"):
        map_rows(sweep[1], "nope")


def test_the_variants_training_curves_are_overlaid(sweep, tmp_path):
    from distill.publish.train_plots import series
    from distill.tracking import read_log_history, save_log_history
    root, variants = sweep
    for k, v in enumerate(variants[:2]):
        save_log_history([{"step": s, "loss": 2.0 / (s + k), "learning_rate": 1e-3,
                           "num_input_tokens_seen": 100 * s, "train_runtime": 0.5 * s}
                          for s in (1, 2, 3)], v.run_dir)
    md = write_map(root, variants, "ref").read_text()
    assert "![map_training](map_training.png)" in md
    assert (root / "report" / "map_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s for s, _ in series(read_log_history(variants[1].run_dir))["loss"]] == [1, 2, 3]
    for v in variants[:2]:
        (v.run_dir / "train" / "log_history.jsonl").unlink()   # the module's other tests see none
