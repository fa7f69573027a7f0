"""Prompts stage: toy and JSONL sources, stable ids, re-runs add nothing, bad rows named."""

import json
import re
import shutil
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.errors import InputError
from distill.config import recipe_path
from distill.prompts import run_prompts
from distill.records import RunDir


def _cfg(*overrides):
    return load_recipe(recipe_path("smoke"), list(overrides))


def test_toy_prompts_counts_and_rerun_adds_nothing(tmp_path):
    cfg = _cfg("prompts.sources.0.count=30", "prompts.sources.1.count=20", "prompts.sources.2.count=0")
    assert run_prompts(cfg, tmp_path) == {"toy_arith": 30, "toy_code": 20, "toy_mult": 0}
    stage = RunDir(tmp_path).stage("prompts")
    recs = list(stage.read())
    assert len(recs) == 50 and stage.is_complete()
    assert {r["category"] for r in recs} == {"reasoning", "coding"}
    assert all(r["verifier"] == ("math" if r["source"] == "toy_arith" else "code") for r in recs)
    run_prompts(cfg, tmp_path)
    assert len(stage.shards()) == 1 and len(list(stage.read())) == 50
    # growing a source adds only the new prompts
    run_prompts(_cfg("prompts.sources.0.count=40", "prompts.sources.1.count=20", "prompts.sources.2.count=0"),
                tmp_path)
    assert len(list(stage.read())) == 60


def test_jsonl_source_maps_fields_and_names_bad_rows(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"q": "What is 1+1?", "a": "2"}) + "\n"
                    + json.dumps({"q": "What is 2+2?", "a": 4}) + "\n")
    src = f"prompts.sources=[{{name: mine, kind: jsonl, path: {data}, category: reasoning, prompt_field: q, answer_field: a}}]"
    cfg = _cfg(src)
    run_prompts(cfg, tmp_path / "run")
    recs = list(RunDir(tmp_path / "run").stage("prompts").read())
    assert [r["answer"] for r in recs] == ["2", "4"] and recs[0]["verifier"] == "math"
    data.write_text(json.dumps({"q": "x", "a": "1"}) + "\n" + json.dumps({"question": "y"}) + "\n")
    with pytest.raises(InputError) as e:
        run_prompts(cfg, tmp_path / "run2")
    assert str(e.value).startswith(f"{data}:2: prompts.sources.mine: row has no field 'q'")
    assert not RunDir(tmp_path / "run2").stage("prompts").is_complete()


def test_a_new_template_makes_new_records_and_drops_the_old_ones(tmp_path):
    counts = ["prompts.sources.0.count=10", "prompts.sources.1.count=5", "prompts.sources.2.count=0"]
    run_prompts(_cfg(*counts), tmp_path)
    stage = RunDir(tmp_path).stage("prompts")
    before = {r["id"]: r["source"] for r in stage.read()}
    # A new template for one source: its prompts are new records (so new generations); the
    # other source's records are untouched; nothing of the old template is left.
    run_prompts(_cfg(*counts, "prompts.sources.0.prompt_template='{prompt} Think step by step.'"),
                tmp_path)
    after = {r["id"]: r for r in stage.read()}
    assert len(after) == 15 and stage.manifest()["dropped"] == 10
    arith = {i for i, r in after.items() if r["source"] == "toy_arith"}
    assert len(arith) == 10 and not arith & set(before)
    assert all(after[i]["messages"][-1]["content"].endswith(" Think step by step.") for i in arith)
    assert {i for i, r in after.items() if r["source"] == "toy_code"} == \
        {i for i, s in before.items() if s == "toy_code"}
    # A system prompt changes every source's messages; a source left out of the recipe goes.
    run_prompts(_cfg("prompts.sources.0.count=10", "prompts.sources=[{name: toy_arith, kind: toy, "
                     "family: arith, category: reasoning, count: 10}]",
                     "prompts.system_prompt=Be brief."), tmp_path)
    last = list(stage.read())
    assert len(last) == 10 and {r["source"] for r in last} == {"toy_arith"}
    assert all(r["messages"][0] == {"role": "system", "content": "Be brief."} for r in last)
    assert not {r["id"] for r in last} & (set(after) | set(before))


# ------------------------------------------------------------------ real recipes on real rows

DATA = Path(__file__).parents[1].parent / "shared" / "data"
SCHEMAS = DATA / "schemas"
needs_data = pytest.mark.skipif(not (DATA / "mbpp").is_dir(), reason=f"data not found at {DATA}")
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _hub_folder(root: Path, config: str, splits: dict[str, list[dict]]) -> Path:
    """A local copy of a Hub dataset repo: parquet files per split and the README's configs."""
    from datasets import Dataset
    files = []
    for split, rows in splits.items():
        path = root / config / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows).to_parquet(str(path))
        files.append(f"  - split: {split}\n    path: {config}/{split}-*\n")
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n"
                                    + "".join(files) + "---\n")
    return root


def _recipe_source(recipe: str, name: str, **update):
    cfg = load_recipe(recipe_path(recipe))
    src = next(s for s in cfg.prompts.sources if s.name == name)
    cfg.prompts.sources = [src.model_copy(update=update)]
    return cfg


@needs_data
@needs_bwrap
@pytest.mark.parametrize("recipe", ["r1-to-7b", "qwen3-moe-to-8b"])
def test_mbpp_prompts_name_the_function_the_tests_call(tmp_path, hf_cache, recipe):
    """MBPP's task text has neither the function's name nor a test: the recipes ask as MBPP
    does, with the row's tests in the prompt, so a correct answer can pass them. The full
    config's train split, with its setup code before the asserts."""
    from distill.grading.verify import verify_many
    rows = [json.loads(line) for line in (DATA / "mbpp" / "mbpp.jsonl").read_text().splitlines()]
    train = [r for r in rows if 601 <= r["task_id"] <= 974]
    sanitized = json.loads((SCHEMAS / "mbpp-sanitized" / "train.sample.jsonl").read_text())
    assert train[1]["task_id"] == sanitized["task_id"] and len(train) == 374
    folder = _hub_folder(tmp_path / "mbpp", "full", {"train": train})
    cfg = _recipe_source(recipe, "mbpp_train", path=str(folder))
    assert run_prompts(cfg, tmp_path / "run") == {"mbpp_train": 374}
    recs = {r["messages"][-1]["content"]: r for r in RunDir(tmp_path / "run").stage("prompts").read()}
    assert len(recs) == 374
    for row in train:
        text = next(t for t in recs if row["test_list"][0] in t)
        called = re.match(r"assert\s+(?:not\s+)?\(?(?:set\(|math\.isclose\()?\s*(\w+)\(",
                          row["test_list"][0]).group(1)
        assert f"{called}(" in text and row["text"].strip() in text
    first = next(t for t in recs if "first_repeated_char" in t)
    assert first.startswith("You are an expert Python programmer, and here is your task: Write "
                            "a python function to find the first repeated character in a given "
                            "string. Your code should pass these tests:\n\n"
                            'assert first_repeated_char("abcabc") == "a"\n')
    # The setup code goes before the asserts (the one train row with any).
    setup = next(r for r in train if r["test_setup_code"].strip())
    rec = next(r for t, r in recs.items() if setup["test_list"][0] in t)
    assert rec["tests"].startswith(setup["test_setup_code"].strip())
    # The canonical solution, written as the teacher would, passes the filter's verification.
    by_tests = {"\n".join(r["test_list"]): r["code"] for r in train}
    items = [(rec, "```python\n" + next(c for t, c in by_tests.items() if t in text) + "\n```")
             for text, rec in recs.items()]
    verdicts = verify_many(items, workers=2)
    assert [v.reason for v in verdicts] == ["ok"] * 374


def test_a_template_placeholder_reads_any_column(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"q": "Add.", "a": "3", "tests": ["assert f(1) == 2", "assert f(2) == 3"],
                                "level": 4}) + "\n")
    src = (f"prompts.sources=[{{name: mine, kind: jsonl, path: {data}, category: coding, "
           "prompt_field: q, answer_field: null, tests_field: tests, "
           "prompt_template: \"{prompt} (level {level})\\n{tests}\\nUse {{}}.\"}]")
    run_prompts(_cfg(src), tmp_path / "run")
    (rec,) = RunDir(tmp_path / "run").stage("prompts").read()
    assert rec["messages"][-1]["content"] == \
        "Add. (level 4)\nassert f(1) == 2\nassert f(2) == 3\nUse {}."
    assert rec["tests"] == "assert f(1) == 2\nassert f(2) == 3" and rec["verifier"] == "code"
    bad = src.replace("{level}", "{difficulty}")
    with pytest.raises(InputError) as e:
        run_prompts(_cfg(bad), tmp_path / "run2")
    assert str(e.value) == (f"{data}:1: prompts.sources.mine.prompt_template: the template "
                            "names {difficulty}, which the row does not have (columns: a, level, "
                            "q, tests)")


def _numina(answer, question_type="math-word-problem", valid="Yes", problem="What is 6 times 7?"):
    return {"problem": problem, "solution": "Work it out.", "answer": answer,
            "problem_type": "Algebra", "question_type": question_type, "problem_is_valid": valid,
            "solution_is_valid": "Yes", "source": "made-here", "synthetic": False}


def _numina_rows() -> list[dict]:
    real = [json.loads(line) for line in
            (SCHEMAS / "numinamath-1.5" / "train.sample.jsonl").read_text().splitlines()]
    # Real row 0 is a math-word-problem whose answer is "proof"; real row 1 a proof.
    assert [(r["question_type"], r["answer"]) for r in real] == [
        ("math-word-problem", "proof"), ("proof", "proof")]
    return real + [
        _numina("42"),
        _numina("notfound", problem="How many primes divide 0?"),
        _numina("", problem="Find the number."),
        _numina("B", question_type="MCQ", problem="Pick one: (A) 1 (B) 2"),
        _numina("\\frac{", problem="A sum with a broken answer."),
        _numina("7", valid="No", problem="A problem without its figure."),
        _numina("\\frac{1}{2}", problem="Half of one?"),
    ]


@needs_data
def test_numina_rows_whose_gold_cannot_be_checked_are_skipped_and_counted(tmp_path, hf_cache,
                                                                          caplog):
    folder = _hub_folder(tmp_path / "numina", "default", {"train": _numina_rows()})
    cfg = _recipe_source("r1-to-7b", "numina_math", path=str(folder))
    assert cfg.prompts.sources[0].where      # the recipe keeps valid math word problems only
    with caplog.at_level("INFO", logger="distill.prompts"):
        assert run_prompts(cfg, tmp_path / "run") == {"numina_math": 2}
    stage = RunDir(tmp_path / "run").stage("prompts")
    assert sorted(r["answer"] for r in stage.read()) == ["42", "\\frac{1}{2}"]
    manifest = stage.manifest()
    assert manifest["skipped"] == {"numina_math": {"proof": 1, "notfound": 1, "empty": 1,
                                                   "unparsable": 1}}
    assert manifest["excluded"] == {"numina_math": 3}     # proof, MCQ, invalid problem
    assert "numina_math: skipped 4 rows whose gold answer cannot be checked (empty 1, " \
           "notfound 1, proof 1, unparsable 1)" in caplog.text
    # `count` caps the prompts kept, not the rows read: the first checkable row is row 3.
    cfg1 = _recipe_source("r1-to-7b", "numina_math", path=str(folder), count=1)
    assert run_prompts(cfg1, tmp_path / "run1") == {"numina_math": 1}
    assert [r["answer"] for r in RunDir(tmp_path / "run1").stage("prompts").read()] == ["42"]


def test_where_keeps_rows_by_value_or_list_and_names_a_missing_column(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i}+1?", "a": str(i + 1), "kind": k,
                                        "ok": i != 2}) + "\n"
                            for i, k in enumerate(["x", "y", "z", "x"])))
    base = (f"{{name: mine, kind: jsonl, path: {data}, category: reasoning, prompt_field: q, "
            "answer_field: a, where: %s}")
    run_prompts(_cfg("prompts.sources=[" + base % "{kind: [x, z], ok: true}" + "]"), tmp_path / "r")
    stage = RunDir(tmp_path / "r").stage("prompts")
    assert [r["answer"] for r in stage.read()] == ["1", "4"]
    assert stage.manifest()["excluded"] == {"mine": 2}
    with pytest.raises(InputError) as e:
        run_prompts(_cfg("prompts.sources=[" + base % "{level: 3}" + "]"), tmp_path / "r2")
    assert str(e.value) == f"{data}:1: prompts.sources.mine.where.level: the row has no column " \
                           "'level' (columns: a, kind, ok, q)"


def test_sources_without_where_keep_the_shape_their_records_were_written_with(tmp_path):
    """Runs from before `where` existed keep their prompts (and so their paid-for traces):
    a source's shape hash has `where` in it only when it is set."""
    from distill.records import record_id
    cfg = _cfg("prompts.sources.0.count=5", "prompts.sources.1.count=3")
    run_prompts(cfg, tmp_path)
    stage = RunDir(tmp_path).stage("prompts")
    for src in cfg.prompts.sources:
        fields = src.model_dump(mode="json", exclude={"count", "revision", "where"})
        before = record_id(fields, cfg.prompts.system_prompt, cfg.run.seed)  # as written then
        assert {r["shape"] for r in stage.read() if r["source"] == src.name} == {before}
    ids = stage.ids()
    where = _cfg("prompts.sources.0.count=5", "prompts.sources.1.count=3",
                 "prompts.sources.0.where={subcategory: [carries=0, carries=1]}")
    run_prompts(where, tmp_path)
    assert stage.manifest()["dropped"] == 5 and stage.ids() != ids


def test_count_caps_the_prompts_kept_and_a_refresh_adds_none_past_it(tmp_path):
    data = tmp_path / "p.jsonl"

    def write(n):
        data.write_text(json.dumps({"q": "Prove it.", "a": "proof"}) + "\n" + "".join(
            json.dumps({"q": f"What is {i}+1?", "a": str(i + 1)}) + "\n" for i in range(n)))
    src = (f"prompts.sources=[{{name: mine, kind: jsonl, path: {data}, category: reasoning, "
           "prompt_field: q, answer_field: a, count: %d}]")
    write(3)
    stage = RunDir(tmp_path / "run").stage("prompts")
    assert run_prompts(_cfg(src % 2), tmp_path / "run") == {"mine": 2}
    assert [r["answer"] for r in stage.read()] == ["1", "2"]
    assert stage.manifest()["skipped"] == {"mine": {"proof": 1}}
    run_prompts(_cfg(src % 2), tmp_path / "run")          # unchanged: not read, counts kept
    assert stage.manifest()["skipped"] == {"mine": {"proof": 1}} and stage.manifest()["new"] == {"mine": 0}
    write(5)                                              # new rows, but the cap is reached
    run_prompts(_cfg(src % 2), tmp_path / "run")
    assert stage.manifest()["new"] == {"mine": 0} and len(stage.ids()) == 2
    run_prompts(_cfg(src % 3), tmp_path / "run")          # a higher cap: the next row only
    assert stage.manifest()["new"] == {"mine": 1}
    assert [r["answer"] for r in stage.read()] == ["1", "2", "3"]


def test_a_hub_source_that_cannot_be_read_is_bad_input(tmp_path):
    """The tests run offline (conftest): a Hub dataset not in the cache is one line naming the
    source's key, the dataset and where a local copy can come from, not a datasets traceback."""
    src = ("prompts.sources=[{name: hub, kind: hf, path: distill-tests/not-on-hand, "
           "category: reasoning}]")
    with pytest.raises(InputError) as e:
        run_prompts(_cfg(src), tmp_path)
    assert e.value.key == "prompts.sources.hub.path"
    assert e.value.message.startswith("the Hub dataset distill-tests/not-on-hand cannot be read "
                                      "(HF_HUB_OFFLINE is set): point it at a local copy")
