"""The report's economics section: expert utilisation and collapse, cost per kept trace, the
tables and the plot, on a run directory of tiny local models."""

from __future__ import annotations

import json

import pytest

from distill.config import load_recipe
from distill.config import recipe_path
from distill.experts import by_category, collapse_warnings, summarise
from distill.records import Stage


def test_collapse_is_warned_and_balance_is_not():
    import torch
    balanced = torch.full((2, 8), 100.0)
    s = summarise(balanced, top_k=2)
    assert s["top_quarter_share"] == [0.25, 0.25] and s["entropy"] == [1.0, 1.0]
    assert s["tokens"] == 400 and s["max_over_uniform"] == 1.0
    assert collapse_warnings("x", s) == []
    collapsed = torch.tensor([[1.0] * 8, [450.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0, 340.0]])
    s = summarise(collapsed, top_k=2)
    assert s["idle_experts"] == [0, 6]
    warnings = collapse_warnings("category coding", s)
    assert len(warnings) == 1
    assert warnings[0].startswith("expert collapse (category coding, layer 1): experts 0, 7 take 99%")


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    from distill.toy.arch import build_teacher
    path = tmp_path_factory.mktemp("moe")
    model, tok = build_teacher()
    model.config.output_router_logits = False  # saved as the trained teacher is
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _traces(n_per_category: int = 5) -> list[dict]:
    out = []
    for i in range(n_per_category):
        out.append({"category": "reasoning", "messages": [{"role": "user", "content": f"What is {i}+{i}?"}],
                    "reasoning": f"{i}+{i}={2 * i}", "content": f"\\boxed{{{2 * i}}}"})
        out.append({"category": "coding", "messages": [{"role": "user", "content": f"def f{i}(x): return x"}],
                    "reasoning": "identity", "content": f"```python\ndef f{i}(x):\n    return x\n```"})
    return out


def test_expert_utilisation_per_category_through_the_router(moe_dir):
    from transformers import AutoTokenizer

    from distill.experts import _encode
    traces = _traces()
    u = by_category(str(moe_dir), traces, per_category=4, batch_size=3)
    assert set(u["categories"]) == {"reasoning", "coding"} and (u["num_experts"], u["top_k"]) == (8, 2)
    tok = AutoTokenizer.from_pretrained(moe_dir)
    for cat, s in u["categories"].items():
        # every real token of the first 4 traces of the category, and no padding
        assert s["traces"] == 4
        first = [t for t in traces if t["category"] == cat][:4]
        assert s["tokens"] == sum(len(_encode(tok, t)) for t in first)
        assert len(s["per_layer"]) == 4
        for row in s["per_layer"]:
            assert sum(row) == pytest.approx(1.0, abs=1e-3)
    assert u["overall"]["tokens"] == sum(s["tokens"] for s in u["categories"].values())


def test_a_dense_model_has_no_expert_utilisation(tmp_path):
    from distill.toy.arch import build_student
    model, tok = build_student()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert by_category(str(tmp_path), _traces()) is None


def _run_dir(tmp_path, cfg, teacher_dir):
    """A finished run as the stages leave it: prompts, generations, verdicts, a trained student."""
    from distill.toy.arch import build_student
    prompts, gens, verdicts = Stage(tmp_path, "prompts"), Stage(tmp_path, "generate"), Stage(tmp_path, "filter")
    traces = _traces(6)
    with prompts.writer() as wp, gens.writer() as wg, verdicts.writer() as wv:
        for i, t in enumerate(traces):
            wp.write({"id": f"p{i}", "messages": t["messages"], "category": t["category"]})
            wg.write({**t, "id": f"g{i}", "prompt_id": f"p{i}", "gen_hash": cfg.generation_hash(),
                      "usage": {"prompt_tokens": 20, "completion_tokens": 30 + i, "choices": 1},
                      "latency_s": 0.5, "cost": 0.0})
            failed = None if i % 3 == 0 else ("verify" if i % 3 == 1 else "think")
            wv.write({"id": f"g{i}", "prompt_id": f"p{i}", "kept": failed is None, "failed": failed})
    for s in (prompts, gens, verdicts):
        s.complete()
    model, tok = build_student()
    model.save_pretrained(tmp_path / "train" / "model")
    tok.save_pretrained(tmp_path / "train" / "model")
    rows = []
    for role, score in (("teacher", 0.9), ("base", 0.1), ("student", 0.6)):
        for bench in ("toy_arith", "toy_code"):
            rows.append({"model": role, "role": role, "benchmark": bench, "category": "x", "metric": "pass@1",
                         "score": score, "ci_low": None, "ci_high": None, "n": 10,
                         "retention": score / 0.9})
    return rows, traces


def test_economics_section_of_a_toy_run(tmp_path, moe_dir):
    from distill.publish.economics import write_economics
    cfg = load_recipe(recipe_path("smoke"), [f"teacher.model={moe_dir}"])
    rows, traces = _run_dir(tmp_path, cfg, moe_dir)
    report = tmp_path / "report"
    e = write_economics(cfg, tmp_path, rows, report)
    md = (report / "economics.md").read_text()
    assert (report / "quality_vs_cost.png").stat().st_size > 5000
    saved = json.loads((report / "economics.json").read_text())
    teacher, base, student = saved["models"]
    assert (teacher["role"], base["role"], student["role"]) == ("teacher", "base", "student")
    assert teacher["total"] > 2 * student["total"] and teacher["active"] < teacher["total"]
    # both toys were timed here, in the same harness, and priced at $0.10 per machine-hour
    for m in (teacher, student):
        assert m["tokens_per_s"] > 0 and m["tokens_per_s_source"].startswith("measured here")
        assert m["usd_per_m_tokens"] == pytest.approx(0.10 / (m["tokens_per_s"] * 3600) * 1e6)
    assert student["retention"] == pytest.approx(0.6 / 0.9) and teacher["retention"] == pytest.approx(1.0)
    # cost per kept trace: 12 traces, 4 kept; self-hosted cost is each trace's device time
    t = saved["traces"]
    assert (t["traces"], t["kept"]) == (12, 4) and t["basis"].startswith("device-hours")
    per_token = 0.10 / 3600 / teacher["tokens_per_s"]
    tokens = sum(30 + i for i in range(12))
    assert t["total_usd"] == pytest.approx(tokens * per_token)
    assert t["usd_per_kept_trace"] == pytest.approx(t["total_usd"] / 4)
    assert set(t["by_verdict"]) == {"kept", "verify", "think"}
    assert sum(v["share"] for v in t["by_verdict"].values()) == pytest.approx(1.0)
    assert t["by_verdict"]["verify"]["traces"] == 4
    # expert utilisation of the local MoE teacher, per category of its traces
    assert set(saved["experts"]["categories"]) == {"reasoning", "coding"}
    for heading in ("## Teacher and students", "## What a kept trace cost",
                    "## Generation: projected and used", "## Expert utilisation of the teacher"):
        assert heading in md
    assert "per kept trace with the rejected ones paid for" in md
    assert e["generation"]["actual"]["samples"] == 12


def test_an_unreadable_teacher_config_leaves_a_note_not_a_broken_report(tmp_path, monkeypatch):
    from distill.publish.economics import write_economics
    cfg = load_recipe(recipe_path("smoke"), ["teacher.model=./no/such/model"])
    assert write_economics(cfg, tmp_path, [], tmp_path / "report") is None
    text = (tmp_path / "report" / "economics.md").read_text()
    assert "Not available:" in text and "no/such/model" in text
    assert not (tmp_path / "report" / "economics.json").exists()
