"""Prompts stage: toy and JSONL sources, stable ids, re-runs add nothing, bad rows named."""

import json

import pytest

from distill.config import load_recipe
from distill.errors import InputError
from distill.pipeline import recipe_path
from distill.prompts import run_prompts
from distill.records import RunDir


def _cfg(*overrides):
    return load_recipe(recipe_path("smoke"), list(overrides))


def test_toy_prompts_counts_and_rerun_adds_nothing(tmp_path):
    cfg = _cfg("prompts.sources.0.count=30", "prompts.sources.1.count=20")
    assert run_prompts(cfg, tmp_path) == {"toy_arith": 30, "toy_code": 20}
    stage = RunDir(tmp_path).stage("prompts")
    recs = list(stage.read())
    assert len(recs) == 50 and stage.is_complete()
    assert {r["category"] for r in recs} == {"reasoning", "coding"}
    assert all(r["verifier"] == ("math" if r["source"] == "toy_arith" else "code") for r in recs)
    run_prompts(cfg, tmp_path)
    assert len(stage.shards()) == 1 and len(list(stage.read())) == 50
    # growing a source adds only the new prompts
    run_prompts(_cfg("prompts.sources.0.count=40", "prompts.sources.1.count=20"), tmp_path)
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
    counts = ["prompts.sources.0.count=10", "prompts.sources.1.count=5"]
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
