"""Every shipped recipe, rehearsed end to end (slow tier): the real tokenizers and templates, the
real dataset layouts (local copies of the Hub repos), the real architecture at a tiny width,
the dry-run teacher in the endpoint's dialect, training launched with accelerate on 2 CPU
processes, every benchmark of the recipe scored through the `vllm serve` command line. Checks
what a user would: the student saved with the real vocabulary and special tokens, coding
traces that pass when the teacher answered right, every benchmark scored for all three
models, and every report page and card marked as a rehearsal. And a pilot: the recipe's
teacher replaced by an endpoint of known behaviour, its printed figures held against the
records."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.records import Stage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TOKENIZERS = DATA / "tokenizers"
RECIPES = ["r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"]


def _distill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_rehearsal_of_every_shipped_recipe(recipe, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    real = load_recipe(ROOT / "configs" / f"{recipe}.yaml")
    run = tmp_path / "run"
    p = _distill("rehearse", recipe, "--run-dir", str(run), "--data", str(DATA),
                 "--tokenizers", str(TOKENIZERS), cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    # The student: the real vocabulary, special tokens and end-of-turn stop token.
    model = run / "train" / "model"
    config = AutoConfig.from_pretrained(model)
    from distill.plan.params import load_config
    published, _ = load_config(real.train.student)
    assert config.vocab_size == published["vocab_size"]
    tok = AutoTokenizer.from_pretrained(model)
    real_tok = AutoTokenizer.from_pretrained(TOKENIZERS / real.train.student.split("/")[-1])
    assert len(tok) == len(real_tok) and tok.chat_template == real_tok.chat_template
    assert tok.eos_token == "<|im_end|>"
    eos = GenerationConfig.from_pretrained(model).eos_token_id
    assert tok.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])
    if real.train.max_position_embeddings:
        assert config.max_position_embeddings == real.train.max_position_embeddings
    manifest = Stage(run, "train").manifest()
    assert manifest.get("world_size") == 2          # accelerate launched 2 processes

    # Traces verified with the real prompt layouts: coding traces pass when the teacher
    # answered right; math ones too.
    verdicts = list(Stage(run, "filter").read())
    gens = {g["id"]: g for g in Stage(run, "generate").read()}
    kept_by_category = {}
    for v in verdicts:
        if v["kept"]:
            kept_by_category[gens[v["id"]]["category"]] = kept_by_category.get(gens[v["id"]]["category"], 0) + 1
    assert kept_by_category.get("coding", 0) > 0 and kept_by_category.get("reasoning", 0) > 0
    # A coding trace fails verification only when the stand-in answered wrong on purpose (its
    # wrong program is `def solution(*args)`): every right answer passed the real tests.
    for v in verdicts:
        g = gens[v["id"]]
        if v["failed"] == "verify" and g["category"] == "coding":
            assert "def solution(*args)" in g["content"], (v, g["content"][:300])

    # Every benchmark of the recipe scored for teacher, base and student.
    scores = Stage(run, "eval").read_json("scores.json")
    scored = {(r["role"], r["benchmark"]) for r in scores}
    for bench in real.eval.benchmarks:
        for role in ("teacher", "base", "student"):
            assert (role, bench) in scored, (role, bench)
    teacher_code = [r for r in scores if r["role"] == "teacher" and r["category"] == "coding"
                    and r["metric"] == "pass@1"]
    assert any(r["score"] > 0 for r in teacher_code)   # the stand-in's right programs pass

    # Marked as a rehearsal everywhere it shows, and never pushed.
    report = run / "report"
    for page in ("leaderboard.md", "leaderboard.html", "economics.md"):
        assert "REHEARSAL" in (report / page).read_text(), page
    card = (report / "README.md").read_text()
    assert "A rehearsal, not a model" in card and "base_model:" not in card.split("---")[1]
    assert "rehearsal" in (report / "dataset_card.md").read_text()
    assert (report / "rehearsal.md").is_file()
    assert not (Stage(run, "publish").manifest() or {}).get("pushed")


@pytest.mark.slow
def test_pilot_prints_what_the_teachers_traces_measured(tmp_path):
    """A pilot of r1-to-1.5b whose 'real' teacher is a dry-run endpoint speaking DeepSeek's API
    at a set speed and price: the figures it prints are the records' own."""
    from distill.serving.launcher import free_port, launched

    key = tmp_path / "key.jsonl"
    key.write_text("")              # no answer key: the endpoint answers wrong, as a stranger would
    port = free_port()
    env_key = "PILOT_TEST_KEY"
    os.environ[env_key] = "sk-pilot"
    cmd = [sys.executable, "-m", "distill.serving.dryrun", "--tokenizer", str(TOKENIZERS / "DeepSeek-R1"),
           "--dialect", "deepseek", "--model", "deepseek-reasoner", "--api-key-env", env_key,
           "--mix", "right=0.5,truncated=0.3,wrong=0.2", "--tokens-per-s", "20000",
           "--port", str(port)]
    run = tmp_path / "pilot"
    with launched(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "endpoint.log", 120):
        p = _distill("pilot", "r1-to-1.5b", "--prompts", "12", "--run-dir", str(run),
                     "--data", str(DATA), "--tokenizers", str(TOKENIZERS),
                     "-o", f"teacher.base_url=http://127.0.0.1:{port}/v1",
                     "-o", "teacher.model=deepseek-reasoner", "-o", f"teacher.api_key_env={env_key}",
                     "-o", "generate.max_n_per_request=1", "-o", "generate.samples_per_prompt=2",
                     cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    gens = list(Stage(run, "generate").read())
    counts = Stage(run, "filter").read_json("counts.json")
    summary = json.loads((run / "report" / "pilot.json").read_text())
    assert "per kept trace" in p.stdout and "full run" in p.stdout
    assert summary["samples"] == len(gens) == 24
    truncated = sum(g["finish_reason"] == "length" for g in gens)
    assert summary["length_cap_hit_rate"] == round(truncated / len(gens), 4)
    cost = sum(g["cost"] for g in gens)
    assert summary["cost"] == pytest.approx(cost, rel=1e-6)
    if counts["kept"]:
        assert summary["usd_per_kept_trace"] == pytest.approx(cost / counts["kept"], rel=1e-4)
    assert summary["rejected_per_filter"] == counts["rejected"]
    assert summary["completion_tokens_per_s"] > 0
    # The full recipe projected from the pilot's own means: 100,000 NuminaMath prompts.
    full = summary["full_run"]
    assert full["prompts"] >= 100_000 and full["projected"]["samples"] == 2 * full["prompts"]
    mean = sum(g["usage"]["completion_tokens"] for g in gens) / len(gens)
    assert full["projected"]["output_tokens"] == pytest.approx(full["projected"]["samples"] * mean, rel=0.01)
