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
