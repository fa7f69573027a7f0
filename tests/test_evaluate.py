"""The evaluate stage: same sampling for all three models, scores with intervals, resume.

The endpoint, client, scorer and benchmark are small stand-ins here (patched into
`sys.modules`), so the test checks the stage's own logic: which samples it asks for, what it
writes, and how it scores.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from distill.config import BenchmarkSettings, Recipe
from distill.grading.benchmarks import Benchmark
from distill.errors import InputError
from distill.eval import run_evaluate
from distill.grading.verify import Verdict, extract_answer
from distill.records import Stage
from distill.teacher.client import Choice, Job, Response

QUESTIONS = [
    {"id": f"q{i}", "source": "toy", "categories": {"carries": i % 2},
     "messages": [{"role": "user", "content": f"What is {i}+{i}?"}], "verifier": "math",
     "answer": str(2 * i), "tests": None, "entry_point": None}
    for i in range(6)
]


def _answer(model: str, question: str) -> str:
    a, b = question.removeprefix("Now: ").removeprefix("What is ").removesuffix("?").split("+")
    right = int(a) + int(b)
    if model == "teacher-model":
        return str(right)
    if model == "base-model":
        return str(right + 1)
    return str(right) if int(a) % 3 else str(right + 1)  # the distilled student misses q0, q3


class World:
    """Stand-in endpoints, client, scorer and benchmark; counts every sample it is asked for."""

    def __init__(self):
        self.requests: list[tuple[str, str, int, float]] = []  # (model, question, n, temperature)

    def install(self, monkeypatch):
        @contextlib.contextmanager
        def teacher_endpoint(teacher):
            yield "http://teacher", "teacher-model", None

        @contextlib.contextmanager
        def serve_local(model, revision=None, **kw):
            yield "http://local", "student-model" if model.endswith("model") else "base-model"

        def complete_all(base_url, model, jobs, on_done, **kw):
            for job in jobs:
                q = job.messages[-1]["content"]
                self.requests.append((model, q, job.n, job.temperature))
                ans = _answer(model, q)
                on_done(job, Response([Choice(f"\\boxed{{{ans}}}", "r", "stop", None)] * job.n, {}, 0.0))
            return []

        def verify_many(items, workers=2, **kw):
            return [Verdict(c == f"\\boxed{{{p['answer']}}}", "ok") for p, c in items]

        bench = Benchmark(name="toy_arith", version="1", category="reasoning",
                          hub="local/toy_arith", categories=("carries",),
                          load=lambda data_file, limit: [dict(q) for q in QUESTIONS[:limit]])
        import distill.serving.launcher as launcher
        mods = {
            "distill.serving.endpoint": dict(teacher_endpoint=teacher_endpoint),
            "distill.serving.launcher": dict(serve_local=serve_local, free_port=launcher.free_port,
                                             launched=launcher.launched),
            "distill.teacher.client": dict(Job=Job, complete_all=complete_all),
            "distill.grading.verify": dict(verify_many=verify_many, extract_answer=extract_answer),
            "distill.grading.benchmarks": dict(get_benchmark=lambda name: bench),
        }
        for name, attrs in mods.items():
            monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
        return self

    def samples(self, model=None):
        return sum(n for m, _, n, _ in self.requests if model in (None, m))


def recipe(samples=2, limit=None, temperature=0.6) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "tiny"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning",
                                 "family": "arith"}]},
        "teacher": {"model": "toy:teacher"},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"], "samples": samples, "limit": limit,
                 "temperature": temperature},
    })


@pytest.fixture
def run_dir(tmp_path):
    Stage(tmp_path, "train").complete(model="train/model")
    return tmp_path


def _rows(run_dir):
    return {(r["role"], r["category"], r["metric"]): r
            for r in Stage(run_dir, "eval").read_json("scores.json")}


def test_all_three_models_are_scored_with_the_same_sampling(monkeypatch, run_dir):
    world = World().install(monkeypatch)
    run_evaluate(recipe(samples=2, temperature=0.3), run_dir)

    assert world.samples("teacher-model") == world.samples("base-model") == \
        world.samples("student-model") == 12
    assert {t for *_, t in world.requests} == {0.3}
    assert Stage(run_dir, "eval").is_complete()
    rows = _rows(run_dir)
    assert rows[("teacher", "reasoning", "pass@1")]["score"] == 1.0
    assert rows[("base", "reasoning", "pass@1")]["score"] == 0.0
    student = rows[("student", "reasoning", "pass@1")]
    assert student["score"] == pytest.approx(4 / 6) and student["n"] == 6
    assert student["ci_low"] < 4 / 6 < student["ci_high"]
    # q0 and q3 have carries=0 and carries=1: each subcategory keeps 2 of 3.
    assert rows[("student", "reasoning/carries=0", "pass@1")]["score"] == pytest.approx(2 / 3)
    assert rows[("student", "reasoning/carries=1", "pass@1")]["n"] == 3
    assert rows[("student", "reasoning", "pass@2")]["score"] == pytest.approx(4 / 6)
    assert set(student) == {"model", "role", "benchmark", "category", "metric", "score",
                            "ci_low", "ci_high", "n", "samples", "retention", "retention_ci_low",
                            "retention_ci_high", "truncated", "repetitive", "infra_errors",
                            "options"}
    # Retention of the teacher's pass@1 (the teacher solves everything), with a paired interval.
    assert student["retention"] == pytest.approx(4 / 6)
    assert student["retention_ci_low"] < 4 / 6 < student["retention_ci_high"] <= 1.0
    assert rows[("student", "reasoning/carries=1", "pass@1")]["retention"] == pytest.approx(2 / 3)
    assert rows[("teacher", "reasoning", "pass@1")]["retention"] == 1.0
    assert rows[("base", "reasoning", "pass@1")]["retention"] == 0.0
    # A math benchmark with two samples per question also reports maj@2.
    assert rows[("student", "reasoning", "maj@2")]["score"] == pytest.approx(4 / 6)
    comparisons = {(c["a"], c["b"], c["category"]): c
                   for c in Stage(run_dir, "eval").read_json("comparisons.json")}
    vs_base = comparisons[("student", "base", "reasoning")]
    assert vs_base["difference"] == pytest.approx(4 / 6) and vs_base["ci_low"] > 0
    assert vs_base["gained"] == ["q1", "q2", "q4", "q5"] and vs_base["lost"] == []
    vs_teacher = comparisons[("student", "teacher", "reasoning")]
    assert vs_teacher["lost"] == ["q0", "q3"] and vs_teacher["p_value"] == pytest.approx(0.5)
    rec = next(Stage(run_dir, "eval").read())
    for field in ("role", "model", "benchmark", "version", "task_id", "categories", "sample",
                  "correct", "reason", "answer", "content", "reasoning", "finish_reason"):
        assert field in rec


def test_an_interrupted_eval_asks_only_for_the_missing_samples(monkeypatch, tmp_path, run_dir):
    full_dir = tmp_path / "full"
    Stage(full_dir, "train").complete(model="train/model")
    World().install(monkeypatch)
    run_evaluate(recipe(), full_dir)
    done = list(Stage(full_dir, "eval").read())
    assert len(done) == 36

    # The interrupted run had written every teacher record and one sample of q0..q2 for the
    # base model; nothing of the distilled student. The student is keyed by its train manifest.
    Stage(run_dir, "train").complete(model="train/model")
    part = [r for r in done if r["role"] == "teacher"
            or (r["role"] == "base" and r["sample"] == 0 and r["task_id"] in ("q0", "q1", "q2"))]
    with Stage(run_dir, "eval").writer() as w:
        for r in part:
            w.write(r)
    world = World().install(monkeypatch)
    run_evaluate(recipe(), run_dir)

    assert world.samples("teacher-model") == 0
    assert world.samples("base-model") == 12 - 3
    assert world.samples("student-model") == 12
    assert len(list(Stage(run_dir, "eval").read())) == 36
    assert Stage(run_dir, "eval").read_json("scores.json") == \
        Stage(full_dir, "eval").read_json("scores.json")

    again = World().install(monkeypatch)
    run_evaluate(recipe(), run_dir)
    assert again.samples() == 0


def test_more_samples_reuse_the_ones_drawn_and_new_sampling_draws_anew(monkeypatch, run_dir):
    World().install(monkeypatch)
    run_evaluate(recipe(samples=1), run_dir)
    world = World().install(monkeypatch)
    run_evaluate(recipe(samples=2), run_dir)
    assert world.samples() == 3 * 6  # only sample 1 of each question
    world = World().install(monkeypatch)
    run_evaluate(recipe(samples=2, temperature=1.0), run_dir)
    assert world.samples() == 3 * 12


def test_eval_refuses_to_start_without_a_trained_student(monkeypatch, tmp_path):
    world = World().install(monkeypatch)
    with pytest.raises(InputError, match="train/ is not complete .*run the train stage first"):
        run_evaluate(recipe(), tmp_path)
    assert world.samples() == 0
    assert not Stage(tmp_path, "eval").is_complete()


def test_the_real_benchmark_and_scorer_grade_the_answers(monkeypatch, run_dir):
    """toy_arith from evals/ and the shared math scorer; only endpoints and client stand in."""
    from distill.grading.benchmarks import get_benchmark

    gold = {p["messages"][-1]["content"]: p["answer"]
            for p in get_benchmark("toy_arith").load(None, 4)}
    world = World().install(monkeypatch)
    for name in ("distill.grading.verify", "distill.grading.benchmarks"):
        monkeypatch.delitem(sys.modules, name)
    answers = {"teacher-model": lambda q: f"The sum is \\boxed{{{gold[q]}}}.",
               "base-model": lambda q: "\\boxed{-1}",
               "student-model": lambda q: f"\\boxed{{{gold[q]}}}" if sorted(gold).index(q) % 2
               else "I do not know"}

    def complete_all(base_url, model, jobs, on_done, **kw):
        for job in jobs:
            world.requests.append((model, job.messages[-1]["content"], job.n, job.temperature))
            text = answers[model](job.messages[-1]["content"])
            on_done(job, Response([Choice(text, "r", "stop", None)] * job.n, {}, 0.0))
        return []

    monkeypatch.setattr(sys.modules["distill.teacher.client"], "complete_all", complete_all)
    cfg = recipe(samples=1, limit=4)
    run_evaluate(cfg, run_dir)
    rows = _rows(run_dir)
    assert rows[("teacher", "reasoning", "pass@1")]["score"] == 1.0
    assert rows[("base", "reasoning", "pass@1")]["score"] == 0.0
    assert rows[("student", "reasoning", "pass@1")]["score"] == 0.5
    assert world.samples() == 12
    wrong = [r for r in Stage(run_dir, "eval").read() if not r["correct"]]
    assert len(wrong) == 6 and all(r["reason"] for r in wrong)


def test_an_unknown_benchmark_is_bad_input(monkeypatch, run_dir):
    World().install(monkeypatch)
    monkeypatch.delitem(sys.modules, "distill.grading.benchmarks")
    cfg = recipe()
    cfg.eval.benchmarks = ["no_such_bench"]
    with pytest.raises(InputError, match="no_such_bench"):
        run_evaluate(cfg, run_dir)


@pytest.mark.slow
def test_end_to_end_with_real_servers_and_client(monkeypatch, tmp_path):
    """Three real OpenAI-compatible servers (a tiny untrained student standing in for every
    model), the real async client; a second run asks for nothing."""
    import shutil

    import distill.teacher.client as client
    from distill.toy.arch import build_student

    model, tok = build_student()
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir / "train" / "model")
    Stage(run_dir, "train").complete(model="train/model")
    asked = []
    real = client.complete_all

    def counting(base_url, model, jobs, on_done, **kw):
        jobs = list(jobs)
        asked.extend(j.n for j in jobs)
        return real(base_url, model, jobs, on_done, **kw)

    monkeypatch.setattr(client, "complete_all", counting)
    cfg = Recipe.model_validate({
        "run": {"name": "tiny"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning",
                                 "family": "arith"}]},
        "teacher": {"model": str(base)},
        "train": {"student": str(base)},
        "eval": {"benchmarks": ["toy_arith"], "samples": 2, "limit": 2, "max_tokens": 8},
    })
    run_evaluate(cfg, run_dir)
    assert sum(asked) == 3 * 2 * 2
    records = list(Stage(run_dir, "eval").read())
    assert len(records) == 12 and all(r["finish_reason"] in ("stop", "length") for r in records)
    rows = Stage(run_dir, "eval").read_json("scores.json")
    overall = [r for r in rows if r["metric"] == "pass@1" and "/" not in r["category"]]
    assert {r["role"] for r in overall} == {"teacher", "base", "student"}
    assert all(r["n"] == 2 and 0 <= r["ci_low"] <= r["score"] <= r["ci_high"] for r in overall)
    asked.clear()
    run_evaluate(cfg, run_dir)
    assert asked == []


# ------------------------------------------------------------------------ distill score

DATA = Path(__file__).parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"evaluation data not found at {DATA}")


def _score(*args):
    from typer.testing import CliRunner

    from distill.cli import app
    return CliRunner().invoke(app, ["score", *map(str, args)])


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_data
def test_score_grades_a_users_completions_and_caches_the_verdicts(tmp_path, monkeypatch):
    import gzip

    rows = [json.loads(line) for line in gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt")]
    samples = []
    for r in rows[:6]:  # evalplus' two spellings: a whole solution, or a completion of the prompt
        samples.append({"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]})
        samples.append({"task_id": r["task_id"], "completion": "    return None\n"})
    path = _write(tmp_path / "samples.jsonl", samples)
    data = DATA / "humaneval" / "HumanEval.jsonl.gz"

    result = _score("humaneval", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 0, result.output
    assert re.search(r"coding\s+pass@1\s+50\.0%", result.output)
    assert re.search(r"coding\s+pass@2\s+100\.0%", result.output)
    out = json.loads((tmp_path / "samples.humaneval.results.json").read_text())
    assert (out["tasks"], out["of_tasks"]) == (6, 164)
    assert [s["correct"] for s in out["samples"]] == [True, False] * 6
    assert out["samples"][1]["line"] == 2 and out["samples"][1]["reason"]

    # A second run grades only what it has not graded before.
    verify_mod = sys.modules["distill.grading.verify"]  # (distill.grading.verify is also a function)
    graded = []
    real = verify_mod.verify_many
    monkeypatch.setattr(verify_mod, "verify_many",
                        lambda items, **kw: graded.extend(items) or real(items, **kw))
    samples[1]["completion"] = "    return []\n"
    _write(path, samples)
    assert _score("humaneval", "--samples", path, "--data-file", data, "--subset").exit_code == 0
    assert len(graded) == 1


@needs_data
def test_score_refuses_missing_tasks_unknown_ids_and_bad_lines(tmp_path):
    data = DATA / "gsm8k" / "test.jsonl"
    path = _write(tmp_path / "s.jsonl", [{"task_id": "gsm8k/0", "completion": "\\boxed{18}"}])
    result = _score("gsm8k", "--samples", path, "--data-file", data)
    assert result.exit_code == 2 and "1318 of 1319 tasks have no sample" in result.output
    assert "--subset" in result.output

    path.write_text('{"task_id": "gsm8k/0", "completion": "\\\\boxed{18}"}\n{"task_id": \n')
    result = _score("gsm8k", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 2 and f"{path}:2: not valid JSON" in result.output

    _write(path, [{"task_id": "gsm8k/0", "completion": "\\boxed{18}"}, {"task_id": "nope", "completion": ""}])
    result = _score("gsm8k", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 2 and f"{path}:2: unknown task id 'nope'" in result.output

    _write(path, [{"task_id": "gsm8k/0", "text": "18"}])
    result = _score("gsm8k", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 2 and "completion, solution, response, content" in result.output

    assert _score("no_such_bench", "--samples", path).exit_code == 2


def test_score_without_local_data_or_the_hub_says_where_data_comes_from(tmp_path):
    """Offline with no --data-file: one line naming the benchmark, the Hub dataset it would
    download, the option and the variable; no traceback. A missing samples or data file too."""
    path = _write(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "pass"}])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def score(*args):
        return subprocess.run([sys.executable, "-m", "distill.cli", "score", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=300)

    r = score("humaneval_plus", "--samples", path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: benchmark humaneval_plus: no local data, and the Hub "
                               "dataset evalplus/humanevalplus cannot be downloaded "
                               "(HF_HUB_OFFLINE is set); point --data-file at a local copy")
    assert r.stderr.rstrip().endswith("or unset HF_HUB_OFFLINE to download it")

    r = score("humaneval_plus", "--samples", tmp_path / "none.jsonl")
    assert (r.returncode, r.stderr) == (2, f"error: {tmp_path / 'none.jsonl'}: samples file not found\n")
    r = score("humaneval_plus", "--samples", path, "--data-file", tmp_path / "none.jsonl.gz")
    assert (r.returncode, r.stderr) == (
        2, f"error: {tmp_path / 'none.jsonl.gz'}: benchmark humaneval_plus: data file not found\n")
    r = score("humaneval_pluss", "--samples", path)
    assert r.returncode == 2 and "(did you mean 'humaneval_plus'?)" in r.stderr


@needs_data
def test_score_never_scores_a_completion_the_grader_failed_to_grade(tmp_path, monkeypatch):
    data = DATA / "gsm8k" / "test.jsonl"
    path = _write(tmp_path / "s.jsonl", [{"task_id": "gsm8k/0", "completion": "\\boxed{18}"},
                                         {"task_id": "gsm8k/1", "completion": "\\boxed{3}"}])
    verify_mod = sys.modules["distill.grading.verify"]
    real, broken = verify_mod.verify_many, [True]

    def crashing(items, **kw):
        return [Verdict(False, "math verification worker died", infra=True)
                if broken[0] and c == "\\boxed{3}" else v
                for (p, c), v in zip(items, real(items, **kw))]

    monkeypatch.setattr(verify_mod, "verify_many", crashing)
    result = _score("gsm8k", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 1 and "1 completions could not be graded" in str(result.exception)
    kept = json.loads((tmp_path / "s.gsm8k.results.json").read_text())["samples"]
    assert [s["task_id"] for s in kept] == ["gsm8k/0"]        # never cached as wrong
    broken[0] = False
    result = _score("gsm8k", "--samples", path, "--data-file", data, "--subset")
    assert result.exit_code == 0 and re.search(r"reasoning\s+pass@1\s+100\.0%", result.output)


@needs_data
def test_score_reports_maj_at_k_for_answers_it_can_vote_on(tmp_path):
    data = DATA / "gsm8k" / "test.jsonl"
    rows = [{"task_id": "gsm8k/0", "completion": t} for t in ("\\boxed{18}", "\\boxed{17}", "\\boxed{18}")]
    rows += [{"task_id": "gsm8k/1", "completion": t} for t in ("\\boxed{2}", "\\boxed{5}", "\\boxed{5}")]
    result = _score("gsm8k", "--samples", _write(tmp_path / "s.jsonl", rows), "--data-file", data,
                    "--subset", "-k", "2")
    assert result.exit_code == 0, result.output
    # gsm8k/0: 2 of 3 right (maj right); gsm8k/1: gold 3, two wrong "5" outvote nothing right.
    assert re.search(r"reasoning\s+pass@1\s+33\.3%", result.output)
    assert re.search(r"reasoning\s+pass@2\s+", result.output)
    assert re.search(r"reasoning\s+maj@3\s+50\.0%", result.output)


# ----------------------------------------------------------------------------- models

def test_a_local_model_is_keyed_by_its_files(tmp_path):
    from distill.eval.models import weights_key

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    key = weights_key(str(model), None)
    assert key.startswith("local@") and weights_key(str(model), None) == key
    (model / "model.safetensors").write_bytes(b"\1" * 64)   # re-trained at the same path
    assert weights_key(str(model), None) != key
    assert weights_key("deepseek-reasoner", None) == "deepseek-reasoner@"
    assert weights_key("org/model", "abc123") == "org/model@abc123"


def test_vllm_serves_a_local_model_with_the_recipes_arguments(tmp_path, monkeypatch):
    """A stand-in `vllm` on PATH records its command line and answers /health the way
    `vllm serve` does; the stage waits for it, uses its URL and stops it."""
    import os
    import stat

    from distill.eval.models import serve_vllm

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    fake.write_text(f"""#!/bin/sh
echo "$@" > {tmp_path}/argv
while [ "$1" != "--port" ]; do shift; done
exec {sys.executable} -m http.server "$2" --bind 127.0.0.1 --directory {tmp_path}/www
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    import httpx

    with serve_vllm("org/student", revision="r1", extra_args=["--tensor-parallel-size", "2"]) \
            as (url, name):
        assert name == "org/student" and url.startswith("http://127.0.0.1:")
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        argv = (tmp_path / "argv").read_text().split()
    assert argv[:2] == ["serve", "org/student"]
    assert argv[argv.index("--served-model-name") + 1] == "org/student"
    assert argv[-4:] == ["--revision", "r1", "--tensor-parallel-size", "2"]
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.removesuffix("/v1") + "/health", timeout=2)


def test_vllm_missing_is_bad_input(monkeypatch, tmp_path):
    from distill.eval.models import serve_vllm

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="eval.server: .*vllm. is not on PATH"):
        with serve_vllm("org/student"):
            pass


def test_each_benchmark_samples_as_declared_unless_the_recipe_says_otherwise():
    from distill.grading.benchmarks import get_benchmark
    from distill.eval.runner import sampling_for

    cfg = recipe(samples=None, temperature=None)
    cfg.eval.benchmarks = ["toy_arith", "aime24"]
    aime, toy = get_benchmark("aime24"), get_benchmark("toy_arith")
    assert sampling_for(cfg, aime).samples == 64 and sampling_for(cfg, aime).temperature == 0.6
    assert sampling_for(cfg, toy).temperature == 0.0
    cfg.eval.samples = 4
    cfg.eval.benchmark = {"aime24": BenchmarkSettings(samples=16, max_tokens=1000)}
    assert sampling_for(cfg, toy).samples == 4
    assert (sampling_for(cfg, aime).samples, sampling_for(cfg, aime).max_tokens) == (16, 1000)
    assert sampling_for(cfg, aime).hash() != sampling_for(cfg, toy).hash()


def test_settings_for_a_benchmark_not_evaluated_are_bad_input(monkeypatch, run_dir):
    World().install(monkeypatch)
    cfg = recipe()
    cfg.eval.benchmark = {"aime24": BenchmarkSettings(samples=2)}
    with pytest.raises(InputError, match="eval.benchmark.aime24: settings for 'aime24'"):
        run_evaluate(cfg, run_dir)


def test_a_changed_prompt_draws_new_samples(monkeypatch, run_dir):
    world = World().install(monkeypatch)
    run_evaluate(recipe(samples=1), run_dir)
    assert world.samples() == 18
    for q in QUESTIONS[:2]:
        monkeypatch.setitem(q, "messages", [{"role": "user", "content": "Now: " + q["messages"][0]["content"]}])
    world = World().install(monkeypatch)
    run_evaluate(recipe(samples=1), run_dir)
    assert world.samples() == 3 * 2


# ------------------------------------------------------ what a score row says about its run

def test_sample_ids_do_not_change_for_runs_without_the_new_settings():
    """Records drawn before the context, request-splitting and grading settings existed keep
    their ids: the sampling hash and the sample id are what they were."""
    from distill.eval.models import EvalModel
    from distill.eval.runner import Sampling, _sample_id

    sp = Sampling(4, 0.6, 0.95, 32768)
    assert sp.hash() == "32c85af7983f7e4d"
    model = EvalModel("base", "Qwen/Qwen2.5-Math-7B", "Qwen/Qwen2.5-Math-7B@", None)
    bench = Benchmark(name="math500", version="v1", category="reasoning", hub="x", load=None)
    problem = {"id": "math500/0", "messages": [{"role": "user", "content": "What is 1+1?"}]}
    assert _sample_id(model, bench, problem, 3, sp.hash()) == "8cd440659e0ebe38"


def _answering(world, finish=lambda model, q: "stop", attempts=lambda model, q: 1):
    """A complete_all that answers as World does, with a finish reason and a number of attempts
    per (model, question)."""
    def complete_all(base_url, model, jobs, on_done, **kw):
        for job in jobs:
            q = job.messages[-1]["content"]
            world.requests.append((model, q, job.n, job.temperature))
            choice = Choice(f"\\boxed{{{_answer(model, q)}}}", "r", finish(model, q), None)
            on_done(job, Response([choice] * job.n, {}, 0.0, attempts=attempts(model, q)))
        return []
    return complete_all


def test_rows_carry_the_share_cut_at_the_length_cap_and_the_infrastructure_errors(monkeypatch,
                                                                                 run_dir):
    world = World().install(monkeypatch)

    def teacher_on(question):
        return lambda m, q: m == "teacher-model" and q == question

    monkeypatch.setattr(sys.modules["distill.teacher.client"], "complete_all", _answering(
        world, finish=lambda m, q: "length" if teacher_on("What is 1+1?")(m, q) else "stop",
        attempts=lambda m, q: 3 if teacher_on("What is 2+2?")(m, q) else 1))

    def verify_many(items, workers=2, **kw):
        # The sandbox dies under the first grading of q4's answers; graded again, they pass.
        again = all(p["id"] == "q4" for p, _ in items)
        return [Verdict(False, "sandbox died during the run", infra=True) if p["id"] == "q4"
                and not again else Verdict(c == f"\\boxed{{{p['answer']}}}", "ok")
                for p, c in items]

    monkeypatch.setattr(sys.modules["distill.grading.verify"], "verify_many", verify_many)
    run_evaluate(recipe(samples=2), run_dir)

    rows = _rows(run_dir)
    teacher = rows[("teacher", "reasoning", "pass@1")]
    assert teacher["truncated"] == pytest.approx(2 / 12)           # q1's two samples
    assert rows[("teacher", "reasoning/carries=1", "pass@1")]["truncated"] == pytest.approx(2 / 6)
    assert rows[("teacher", "reasoning/carries=0", "pass@1")]["truncated"] == 0.0
    # q2's request took 3 attempts (2 retried); q4's answers were graded twice (2 samples, once
    # each), and still count as right: an infrastructure failure is never a wrong answer.
    assert teacher["infra_errors"] == 2 + 2 and teacher["score"] == 1.0
    assert rows[("teacher", "reasoning/carries=0", "pass@1")]["infra_errors"] == 4
    assert rows[("teacher", "reasoning/carries=1", "pass@1")]["infra_errors"] == 0
    assert rows[("teacher", "reasoning", "maj@2")]["infra_errors"] == 4
    for role in ("base", "student"):
        assert rows[(role, "reasoning", "pass@1")]["truncated"] == 0.0
        assert rows[(role, "reasoning", "pass@1")]["infra_errors"] == 2   # q4 again
    q4 = [r for r in Stage(run_dir, "eval").read() if r["task_id"] == "q4"]
    assert len(q4) == 6 and all(r["grade_retries"] == 1 for r in q4)


def test_a_sample_the_grader_cannot_grade_is_not_scored_and_is_asked_again(monkeypatch, run_dir):
    world = World().install(monkeypatch)
    broken = True

    def verify_many(items, workers=2, **kw):
        return [Verdict(False, "sandbox died during the run", infra=True)
                if broken and p["id"] == "q1" and c == "\\boxed{3}"          # the base's q1
                else Verdict(c == f"\\boxed{{{p['answer']}}}", "ok") for p, c in items]

    monkeypatch.setattr(sys.modules["distill.grading.verify"], "verify_many", verify_many)
    with pytest.raises(RuntimeError, match="could not be graded.*sandbox died during the run"):
        run_evaluate(recipe(samples=2), run_dir)
    stage = Stage(run_dir, "eval")
    assert not stage.is_complete() and not (stage.path / "scores.json").exists()
    assert not [r for r in stage.read() if r["role"] == "base" and r["task_id"] == "q1"]
    assert len(list(stage.read())) == 36 - 2
    failed = stage.read_json("failed.json")
    assert [(f["role"], f["benchmark"], f["task"], f["kind"], f["attempts"]) for f in failed] == \
        [("base", "toy_arith", "q1", "grading", 3)]          # eval.grade_retries = 2
    assert failed[0]["model"] == "toy:student" and "sandbox died" in failed[0]["reason"]

    broken, world.requests[:] = False, []
    run_evaluate(recipe(samples=2), run_dir)
    assert world.requests == [("base-model", "What is 1+1?", 2, 0.6)]
    assert stage.is_complete() and not (stage.path / "failed.json").exists()
    assert _rows(run_dir)[("base", "reasoning", "pass@1")]["n"] == 6


def test_the_scored_window_of_a_benchmark_is_in_the_scores(monkeypatch, run_dir):
    World().install(monkeypatch)
    windowed = Benchmark(name="toy_arith", version="1", category="reasoning", hub="local/toy",
                         options={"release": "release_v6", "start_date": None, "end_date": None},
                         load=lambda data_file, limit, **opts: [dict(q) for q in QUESTIONS])
    monkeypatch.setattr(sys.modules["distill.grading.benchmarks"], "get_benchmark", lambda n: windowed)
    cfg = recipe(samples=1)
    cfg.eval.benchmark = {"toy_arith": BenchmarkSettings(options={"release": "release_v5",
                                                                  "start_date": "2024-08-01"})}
    run_evaluate(cfg, run_dir)
    window = {"release": "release_v5", "start_date": "2024-08-01", "end_date": None}
    assert all(r["options"] == window for r in Stage(run_dir, "eval").read_json("scores.json"))
    assert Stage(run_dir, "eval").manifest()["benchmarks"]["toy_arith"]["options"] == window
