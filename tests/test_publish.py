"""The publish stage from a synthetic eval stage: tables, plot and a model card that loads back."""

import csv
import json
import re

import pytest
from huggingface_hub import ModelCard

from distill.config import Recipe
from distill.errors import InputError
from distill.eval import metrics
from distill.publish import run_publish
from distill.records import RunDir, Stage

# Ten questions; the student answers a subset of what the teacher answers.
CORRECT = {"teacher": set(range(8)), "base": {0, 9}, "student": set(range(6))}
NAMES = {"teacher": "big-moe", "base": "small-base", "student": "tiny-distilled"}
COUNTS = {"total": 49, "kept": 42, "rejected": {"verify": 7},
          "by_source": {"arith": {"total": 49, "kept": 42}},
          "by_category": {"reasoning": {"total": 49, "kept": 42}}, "examples": {}}


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
                               "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                               # a share cut at the length cap, and the retried failures
                               "truncated": {"teacher": 0.0, "base": 0.4, "student": 0.1}[role],
                               "infra_errors": 3 if role == "teacher" else 0,
                               # as the eval stage writes it (a paired-bootstrap interval)
                               **({"retention_ci_low": 0.5, "retention_ci_high": 1.0}
                                  if (role, cat) == ("student", "reasoning") else {})})
            # A benchmark the teacher fails entirely: retention is undefined there.
            scores.append({"model": NAMES[role], "role": role, "benchmark": "toy_code",
                           "category": "coding", "metric": "pass@1",
                           "score": 0.0 if role == "teacher" else 0.1, "ci_low": 0.0,
                           "ci_high": 0.3, "n": 10, "truncated": 0.0, "infra_errors": 0,
                           "options": {"release": "v2", "start_date": "2024-08-01"}})
    stage.write_json("scores.json", scores)
    if with_questions:
        stage.write_json("questions.json", questions)
    stage.complete()


@pytest.fixture
def report(tmp_path):
    _write_eval(tmp_path)
    Stage(tmp_path, "filter").write_json("counts.json", COUNTS)
    return run_publish(recipe(), tmp_path)


def _csv(report):
    with open(report / "leaderboard.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_csv_has_the_contract_columns_and_retention(report):
    columns, rows = _csv(report)
    assert columns == ["model", "role", "benchmark", "category", "metric", "score", "ci_low",
                       "ci_high", "n", "retention", "truncated", "repetitive", "infra_errors"]
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
    # What may keep a score from reproducing: answers cut at the cap, infrastructure errors.
    assert float(by[("base", "toy_arith", "reasoning/hard")]["truncated"]) == pytest.approx(0.4)
    assert by[("teacher", "toy_arith", "reasoning")]["infra_errors"] == "3"
    assert by[("student", "toy_code", "coding")]["infra_errors"] == "0"


def test_markdown_and_html_tables(report):
    md = (report / "leaderboard.md").read_text()
    assert "| model | role | benchmark |" in md and "| tiny-distilled | student | toy_arith |" in md
    assert "| 0.75 [0.50, 1.00] |" in md        # retention with its interval
    assert "| 0.25 | 40.0 |  | 0 |" in md       # none given: the retention alone; cut, loops, infra
    assert "| 1.00 | 0.0 |  | 3 |" in md        # the teacher's three retried failures
    assert "Scored with: toy_code: release=v2, start_date=2024-08-01." in md
    page = (report / "leaderboard.html").read_text()
    assert '<table class="sortable">' in page and page.count("<tr>") == 1 + 12
    assert "addEventListener(\"click\"" in page and "<script src" not in page
    assert '<th data-col="retention">retention</th>' in page
    assert '<th data-col="retention 95% CI">' in page and "<td>[0.50, 1.00]</td>" in page
    assert '<th data-col="truncated">' in page and '<th data-col="infra_errors">' in page
    assert '<td class="num" data-v="0.4">40.0</td>' in page
    assert "Scored with: toy_code: release=v2, start_date=2024-08-01." in page


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
    # The pushed traces are the training data the Hub links; a local JSONL has no Hub id.
    assert card.data.datasets == ["org/tiny-distilled-traces"]
    assert "big-moe" in card.text and '"kept": 42' in card.text and "| verify | 7 |" in card.text
    assert "License: apache-2.0 (from publish.license)" in card.text
    assert "revision not pinned" in card.text and "distill 0.1.0" in card.text
    assert "```yaml\nrun:\n  name: tiny" in card.text  # the resolved recipe
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
    with pytest.raises(InputError, match="eval/ is not complete .*run the evaluate stage first"):
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


# ------------------------------------------------------------------ dataset card, dry run, push

TOKEN = "hf_standin_secret_0123456789"


def _write_traces(run_dir, n=12):
    """Generate records and the kept set (every other one) as the filter stage writes them."""
    gen, data = Stage(run_dir, "generate"), RunDir(run_dir).dataset
    with gen.writer() as g, data.writer() as d:
        for i in range(n):
            prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
            g.write({"id": f"g{i}", "prompt_id": f"p{i}", "source": "arith", "category": "reasoning",
                     "messages": prompt, "teacher": "big-moe", "answer": str(2 * i), "tests": None,
                     "reasoning": f"{i}+{i}", "content": f"\\\\boxed{{{2 * i}}}", "cost": 0.01,
                     "gen_hash": "h1", "usage": {"completion_tokens": 40, "choices": 1}})
            if i % 2 == 0:
                d.write({"id": f"g{i}", "prompt_id": f"p{i}", "source": "arith",
                         "category": "reasoning", "messages": prompt + [
                             {"role": "assistant", "content": f"<think>{i}+{i}</think>\\\\boxed{{{2 * i}}}"}]})
    gen.complete(samples=n, prompts=n, gen_hash="h1", cost=0.01 * n, completion_tokens=40)
    data.complete(records=n // 2)
    Stage(run_dir, "filter").write_json("counts.json", {**COUNTS, "total": n, "kept": n // 2})


def _write_model(run_dir):
    import shutil

    from distill.toy import resolve_model
    shutil.copytree(resolve_model("toy:student"), run_dir / "train" / "model")
    (run_dir / "train" / "model" / "training_args.bin").write_bytes(b"pickle")
    Stage(run_dir, "train").complete(records=6, method="sft", train_seconds=12.0, train_loss=0.5)


@pytest.fixture
def full_run(tmp_path):
    run_dir = tmp_path / "run"
    _write_eval(run_dir)
    _write_traces(run_dir)
    _write_model(run_dir)
    return run_dir


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_dataset_card_and_dry_run_stage_exactly_what_a_push_sends(full_run, monkeypatch):
    import datasets
    from huggingface_hub import DatasetCard

    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token
    cfg = recipe().model_copy(update={"publish": recipe().publish.model_copy(update={"dry_run": True})})
    report = run_publish(cfg, full_run)
    card = DatasetCard.load(report / "dataset_card.md")
    assert card.data.license is None or card.data.license == "apache-2.0"
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*"
    assert card.data.size_categories == ["n<1K"] and "Kept 6 of 12 traces" in card.text
    assert "| arith | jsonl | data/arith.jsonl |" in card.text
    # Tokens and cost over every sample, not the manifest's last invocation.
    assert "12 samples, 480 completion tokens, $0.12" in card.text

    hub = full_run / "publish" / "hub"
    model, dataset = _files(hub / "model"), _files(hub / "dataset")
    assert model["README.md"] == (report / "README.md").read_bytes()
    assert dataset["README.md"] == (report / "dataset_card.md").read_bytes()
    assert {"config.json", "model.safetensors", "tokenizer.json", "distill_recipe.yaml"} <= set(model)
    assert "training_args.bin" not in model  # pickles are not published
    assert set(dataset) == {"README.md", "data/train-00000-of-00001.parquet"}
    rows = datasets.load_dataset(str(hub / "dataset"), split="train")
    assert len(rows) == 6 and rows[0]["messages"][1]["role"] == "assistant"
    assert sorted(rows["answer"], key=int) == ["0", "4", "8", "12", "16", "20"]
    plan = Stage(full_run, "publish").manifest()
    assert plan["pushed"] == {} and set(plan["staged"]) == {"model", "dataset"}


def test_push_without_a_token_stops_before_staging(full_run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = recipe().model_copy(update={"publish": recipe().publish.model_copy(update={"push": True})})
    with pytest.raises(InputError, match="environment variable HF_TOKEN is not set"):
        run_publish(cfg, full_run)
    assert not (full_run / "publish" / "hub").exists()
    assert not Stage(full_run, "publish").is_complete()


def test_license_is_inherited_from_the_base_model_card(full_run):
    import shutil
    base = full_run.parent / "base"
    shutil.copytree(full_run / "train" / "model", base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    cfg = recipe().model_copy(update={
        "train": recipe().train.model_copy(update={"student": str(base)}),
        "publish": recipe().publish.model_copy(update={"license": None})})
    report = run_publish(cfg, full_run)
    card = ModelCard.load(report / "README.md")
    assert card.data.license == "mit" and "mit (inherited from the base model)" in card.text


def test_push_to_a_local_hub_stand_in(full_run, tmp_path, monkeypatch):
    """The real push path (the CLI, HfApi over HTTP) against tests/standins.py: the Hub
    cannot be reached from here. The repos receive exactly the staged folders, private; the
    token comes from the environment and is written nowhere."""
    import os
    import subprocess
    import sys

    from huggingface_hub import constants, hf_hub_download

    from distill.config import dump_recipe
    from standins import HubStandIn

    cfg = recipe().model_copy(update={"publish": recipe().publish.model_copy(update={"push": True})})
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(dump_recipe(cfg))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)    # the stand-in is reachable
    with HubStandIn(TOKEN) as hub:
        env = {**os.environ, "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        r = subprocess.run([sys.executable, "-m", "distill.cli", "publish", str(recipe_file),
                            "--run-dir", str(full_run)], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        model, dataset = hub.repos[("model", "org/tiny-distilled")], \
            hub.repos[("dataset", "org/tiny-distilled-traces")]
        staged = full_run / "publish" / "hub"
        assert model.files == _files(staged / "model")
        assert dataset.files == _files(staged / "dataset")
        assert model.private and dataset.private
        assert ("POST", "/api/validate-yaml") in hub.requests  # the card's metadata was checked
        pushed = Stage(full_run, "publish").manifest()["pushed"]
        assert pushed["model"].startswith(f"{hub.url}/org/tiny-distilled/commit/")
        # Read back through the client: the card loads with its eval results.
        readme = hf_hub_download("org/tiny-distilled", "README.md", endpoint=hub.url,
                                 cache_dir=str(tmp_path / "dl"))
        assert {r.dataset_name for r in ModelCard.load(readme).data.eval_results} == \
            {"toy_arith", "toy_code"}

        # In this process from here on: a re-push replaces the repo's content, so a stale
        # shard from an earlier push goes.
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",   # downloads, too
                            hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        dataset.files["data/train-00000-of-00002.parquet"] = b"stale"
        run_publish(cfg, full_run)
        assert hub.repos[("dataset", "org/tiny-distilled-traces")].files == _files(staged / "dataset")
        # A wrong token is refused by the Hub, and the stage does not look complete.
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        with pytest.raises(Exception, match="401"):
            run_publish(cfg, full_run)
        assert not Stage(full_run, "publish").is_complete()
    leaks = [p for root in (full_run, tmp_path / "hf-home") if root.exists()
             for p in root.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaks == [] and TOKEN not in r.stdout + r.stderr


def test_an_adapter_is_staged_as_its_own_repo(full_run):
    adapter = full_run / "train" / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 16}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    base = recipe()
    cfg = base.model_copy(update={
        "train": base.train.model_copy(update={"adapter": "lora"}),
        "publish": base.publish.model_copy(update={"dry_run": True,
                                                   "adapter_repo": "org/tiny-lora"})})
    run_publish(cfg, full_run)
    staged = _files(full_run / "publish" / "hub" / "adapter")
    assert set(staged) >= {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    card = ModelCard.load(full_run / "publish" / "hub" / "adapter" / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == "small-base"
    assert "org/tiny-distilled" in card.text  # where the merged model and its scores are
    plan = json.loads((full_run / "publish" / "hub" / "plan.json").read_text())
    assert plan["adapter"]["repo_id"] == "org/tiny-lora"

    no_adapter = base.model_copy(update={"publish": base.publish.model_copy(
        update={"dry_run": True, "adapter_repo": "org/tiny-lora"})})
    with pytest.raises(InputError, match="train.adapter is none"):
        run_publish(no_adapter, full_run)


def _write_quantized(run_dir):
    """A quantize stage's output and the eval rows of its one GGUF variant."""
    q = Stage(run_dir, "quantize")
    q.mkdir()
    (q.path / "tiny-distilled-Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 296)
    variants = [{"role": "student", "name": "org/tiny-distilled", "format": "safetensors",
                 "qtype": None, "file": "../train/model", "bytes": 1000, "model_rss_bytes": 4 << 20,
                 "tokens_per_s": 100.0},
                {"role": "student-q4_k_m", "name": "org/tiny-distilled-Q4_K_M", "format": "gguf",
                 "qtype": "q4_k_m", "file": "tiny-distilled-Q4_K_M.gguf", "bytes": 300,
                 "model_rss_bytes": 1 << 20, "tokens_per_s": 900.0}]
    q.write_json("variants.json", variants)
    q.complete(records=2)
    ev = Stage(run_dir, "eval")
    scores = ev.read_json("scores.json")
    scores.append({"model": "org/tiny-distilled-Q4_K_M", "role": "student-q4_k_m",
                   "benchmark": "toy_arith", "category": "reasoning", "metric": "pass@1",
                   "score": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 10, "truncated": 0.1,
                   "repetitive": 0.2, "infra_errors": 0, "retention": 0.5,
                   "retention_student": 0.8, "retention_student_ci_low": 0.6,
                   "retention_student_ci_high": 1.0})
    ev.write_json("scores.json", scores)
    ev.write_json("comparisons.json", [{"a": "student-q4_k_m", "b": "student",
                                        "benchmark": "toy_arith", "category": "reasoning",
                                        "metric": "pass@1", "gained": ["q1"], "lost": ["q2", "q3"],
                                        "p_value": 0.6}])


@pytest.mark.parametrize("where", ["model", "separate"])
def test_the_gguf_files_go_where_the_recipe_says_with_the_quantization_table(full_run, where,
                                                                                monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    _write_quantized(full_run)
    base = recipe()
    cfg = base.model_copy(update={
        "publish": base.publish.model_copy(update={"dry_run": True}),
        "quantize": base.quantize.model_copy(update={"enabled": True, "gguf_repo": where})})
    report = run_publish(cfg, full_run)
    edge = re.sub(r" +", " ", (report / "edge.md").read_text())   # the table's padding
    assert "| toy_arith | org/tiny-distilled-Q4_K_M | q4_k_m | 300 B | 1.0 MiB | 900 |" in edge
    assert "| 0.80 [0.60, 1.00] | +1 / -2 | 10.0 | 20.0 |" in edge   # vs unquantized, flips, cut, loops
    card = (report / "README.md").read_text()
    assert "## Quantized variants" in card and "org/tiny-distilled-Q4_K_M" in card
    hub = full_run / "publish" / "hub"
    plan = json.loads((hub / "plan.json").read_text())
    if where == "model":
        assert "tiny-distilled-Q4_K_M.gguf" in _files(hub / "model") and "gguf" not in plan
        assert "llama-server -hf org/tiny-distilled:Q4_K_M" in card
    else:
        assert plan["gguf"]["repo_id"] == "org/tiny-distilled-GGUF"
        assert set(_files(hub / "gguf")) == {"README.md", "tiny-distilled-Q4_K_M.gguf"}
        assert "tiny-distilled-Q4_K_M.gguf" not in _files(hub / "model")
        gguf_card = (hub / "gguf" / "README.md").read_text()
        assert "base_model: org/tiny-distilled" in gguf_card and "ollama run hf.co/org/tiny-distilled-GGUF:Q4_K_M" in gguf_card
