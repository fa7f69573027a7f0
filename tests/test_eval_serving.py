"""Models the eval stage serves itself: the real recipes' vLLM settings, the context length
`vllm serve` gets (real tokenizers, chat templates and config.json files of the recipes'
students), and a run against a stand-in `vllm` that refuses what does not fit, as vLLM does."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from distill.config import Recipe, load_recipe
from distill.eval.context import plan_context, position_limit
from distill.eval.models import eval_models
from distill.records import Stage

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "tokenizers").is_dir(), reason=f"no data at {DATA}")
RECIPES = ["r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"]


@pytest.mark.parametrize("name", RECIPES)
def test_the_real_recipes_serve_their_students_with_vllm_on_every_gpu(name, tmp_path):
    """256 concurrent 32k-token answers need vLLM (one replica per GPU), not distill's server."""
    cfg = load_recipe(REPO / "configs" / f"{name}.yaml")
    assert cfg.eval.server == "vllm"
    args = cfg.eval.server_args
    assert int(args[args.index("--data-parallel-size") + 1]) == 8
    Stage(tmp_path, "train").complete(model="train/model")
    served = {m.role: m.served for m in eval_models(cfg, tmp_path)}
    # The teacher runs at its own endpoint (teacher.base_url); the students are started here.
    assert served == {"teacher": "endpoint", "base": "vllm", "student": "vllm"}


def _model_dir(tmp_path: Path, tokenizer: str, config: str) -> Path:
    """A model directory as vLLM reads it, without weights: the real tokenizer files and the
    real config.json."""
    path = tmp_path / tokenizer
    shutil.copytree(DATA / "tokenizers" / tokenizer, path)
    shutil.copy(REPO / "distill" / "plan" / "hub" / f"{config}.json", path / "config.json")
    return path


def _problems(*names):
    from distill.grading.benchmarks import get_benchmark
    files = {"math500": DATA / "math500" / "test.jsonl", "aime24": DATA / "aime" / "aime24.jsonl",
             "humaneval_plus": DATA / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz"}
    return [p for n in names for p in get_benchmark(n).problems(str(files[n]))]


@needs_data
def test_the_context_is_the_longest_prompt_through_the_template_plus_max_tokens(tmp_path):
    from transformers import AutoTokenizer

    problems = _problems("math500", "aime24", "humaneval_plus")
    model = _model_dir(tmp_path, "Qwen2.5-14B", "Qwen--Qwen2.5-14B")    # 131,072 positions
    ctx = plan_context(str(model), None, problems, 32768)
    assert set(ctx.prompt_tokens) == {p["id"] for p in problems}
    longest = max(ctx.prompt_tokens.values())
    assert ctx.max_model_len == longest + 32768 and "longest prompt" in ctx.why
    # Counted through the chat template: its system prompt and turn markers are tokens too.
    tok = AutoTokenizer.from_pretrained(model)
    first = problems[0]
    raw = len(tok(first["messages"][-1]["content"], add_special_tokens=False)["input_ids"])
    assert ctx.prompt_tokens[first["id"]] >= raw + 10
    assert ctx.max_tokens(first["id"], 32768) == 32768     # it fits: nothing is clamped

    # Qwen2.5-Math-7B has 4,096 positions: vLLM gets 4,096, and each request what is left.
    math7b = plan_context(str(_model_dir(tmp_path, "Qwen2.5-Math-7B", "Qwen--Qwen2.5-Math-7B")),
                          None, problems, 32768)
    assert math7b.max_model_len == 4096 and "max_position_embeddings" in math7b.why
    pid = first["id"]
    assert math7b.max_tokens(pid, 32768) == 4096 - math7b.prompt_tokens[pid]
    assert math7b.max_tokens(pid, 1000) == 1000
    base8b = plan_context(str(_model_dir(tmp_path, "Qwen3-8B-Base", "Qwen--Qwen3-8B-Base")),
                          None, problems, 32768)
    assert base8b.max_model_len == 32768
    # eval.max_model_len wins (a recipe that raised the positions with --hf-overrides knows).
    fixed = plan_context(str(model), None, problems, 32768, fixed=8192)
    assert fixed.max_model_len == 8192
    assert fixed.max_tokens(pid, 32768) == 8192 - ctx.prompt_tokens[pid]


def test_rope_scaling_extends_the_positions_as_vllm_reads_them():
    assert position_limit({"max_position_embeddings": 4096}) == 4096
    yarn = {"max_position_embeddings": 4096, "rope_scaling": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}}
    assert position_limit(yarn) == 16384
    assert position_limit({"max_position_embeddings": 131072, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}}) == 131072
    assert position_limit({"max_position_embeddings": 4096, "rope_parameters": {
        "rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}) == 8192
    assert position_limit({}) is None


def test_the_vllm_command_is_the_recipes_executable_with_the_context_and_is_logged(
        tmp_path, caplog):
    """eval.vllm_executable is split like shell words; --max-model-len comes before the
    recipe's own flags; the command line is logged, the server's output kept."""
    import logging

    import httpx

    from distill.eval.models import serve_vllm

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    fake = tmp_path / "fake vllm.sh"      # a space in the path: quoted in the shell words
    fake.write_text(f"""echo "$@" > {tmp_path}/argv
while [ "$1" != "--port" ]; do shift; done
exec {sys.executable} -m http.server "$2" --bind 127.0.0.1 --directory {tmp_path}/www
""")
    log_path = tmp_path / "logs" / "vllm-base.log"
    caplog.set_level(logging.INFO, logger="distill.eval.models")
    with serve_vllm("org/student", max_model_len=4180, extra_args=["--data-parallel-size", "8"],
                    executable=f"sh '{fake}'", log_path=log_path) as (url, name):
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
    argv = (tmp_path / "argv").read_text().split()
    assert argv[:2] == ["serve", "org/student"]
    assert argv[-4:] == ["--max-model-len", "4180", "--data-parallel-size", "8"]
    logged = caplog.text
    assert f"eval: sh '{fake}' serve org/student --host 127.0.0.1" in logged
    assert "--max-model-len 4180 --data-parallel-size 8" in logged and str(log_path) in logged
    assert "GET /health" in log_path.read_text()       # http.server's request log


@pytest.mark.slow
def test_vllm_gets_the_context_it_needs_and_requests_are_clamped_to_it(tmp_path, monkeypatch,
                                                                      caplog):
    """The stand-in `vllm` (tests/vllm_standin.py) starts at the model's positions (96 here)
    unless told otherwise and refuses a request whose prompt plus max_tokens exceeds its
    context, with vLLM's 400. The recipe asks for 32,768 new tokens: the stage starts it with
    --max-model-len 96 and asks each question for what is left."""
    from distill.eval import run_evaluate
    from teacher_standin import Running, StandIn
    from distill.toy.arch import build_student

    model, tok = build_student()
    base = tmp_path / "base"
    model.config.max_position_embeddings = 96     # a short context, as a base model's 4,096
    model.save_pretrained(base)
    tok.save_pretrained(base)
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir / "train" / "model")
    Stage(run_dir, "train").complete(model="train/model")
    record = tmp_path / "vllm.json"
    monkeypatch.setenv("VLLM_STANDIN_ARGV", str(record))
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{__import__('os').environ.get('PYTHONPATH', '')}")
    caplog.set_level("INFO", logger="distill.eval.models")
    with Running(StandIn(model="api-teacher")) as teacher:
        cfg = Recipe.model_validate({
            "run": {"name": "tiny"},
            "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning",
                                     "family": "arith"}]},
            "teacher": {"model": "api-teacher", "base_url": teacher.url},
            "train": {"student": str(base)},
            "eval": {"benchmarks": ["toy_arith"], "samples": 1, "limit": 2, "max_tokens": 32768,
                     "server": "vllm", "server_args": ["--seed", "0"],
                     # split like shell words: any vLLM, or a stand-in, can be named
                     "vllm_executable": f"{sys.executable} {REPO / 'tests' / 'vllm_standin.py'}"},
        })
        run_evaluate(cfg, run_dir)

    asked = [json.loads(line) for line in open(f"{record}.requests")]
    assert len(asked) == 4 and all(a["status"] == 200 for a in asked)     # base and student
    assert all(a["max_model_len"] == 96 and a["prompt_tokens"] + a["max_tokens"] == 96
               for a in asked)
    argv = json.loads(record.read_text())
    assert argv[argv.index("--max-model-len") + 1] == "96" and argv[-2:] == ["--seed", "0"]
    logged = caplog.text
    assert logged.count("vllm_standin.py serve ") == 2 and "--max-model-len 96" in logged
    records = [r for r in Stage(run_dir, "eval").read() if r["role"] != "teacher"]
    assert len(records) == 4
    assert all(r["clamped"] and r["max_tokens"] == 96 - r["prompt_tokens"] for r in records)
    teacher_records = [r for r in Stage(run_dir, "eval").read() if r["role"] == "teacher"]
    assert all(r["max_tokens"] == 32768 and not r.get("clamped") for r in teacher_records)
    assert Stage(run_dir, "eval").is_complete()
    assert (run_dir / "eval" / "logs" / "vllm-base.log").read_text().count("max_model_len 96") == 1


def test_a_prompt_longer_than_the_served_context_is_reported_and_not_sent(tmp_path):
    from distill.eval.answers import Ask, answer
    from distill.grading.benchmarks import Benchmark
    from distill.eval.models import EvalModel

    def never(max_model_len=None):
        raise AssertionError("no server is started for a question that cannot be asked")

    cfg = Recipe.model_validate({
        "run": {"name": "t"}, "teacher": {"model": "t"}, "train": {"student": "s"},
        "prompts": {"sources": [{"name": "a", "kind": "toy", "category": "reasoning"}]},
        "eval": {"benchmarks": ["toy_arith"]}})
    model = EvalModel("base", "org/base", "org/base@", never, "vllm")
    bench = Benchmark(name="aime24", version="1", category="reasoning", hub="x", load=None)
    ask = Ask(bench, {"id": "aime24/1", "messages": [{"role": "user", "content": "..."}]},
              ["s0", "s1"], "h", 0.6, 0.95, 4096 - 4116, 32768, 4116)
    failures = answer(cfg, Stage(tmp_path, "eval"), model, [ask], set(), 4096)
    assert failures == [{"model": "org/base", "role": "base", "benchmark": "aime24",
                         "task": "aime24/1", "samples": [0, 1], "kind": "context", "attempts": 0,
                         "reason": "the prompt has 4116 tokens and the context is 4096: nothing "
                                   "fits after it"}]


def test_a_self_hosted_teacher_keeps_its_own_vllm_settings(tmp_path):
    """`-o teacher.base_url=null -o teacher.backend=vllm_serve` (r1-to-7b's comment): the
    teacher is started with teacher.vllm (tensor and expert parallel over 8 GPUs, 40,960
    tokens), not with the students' one-replica-per-GPU flags."""
    cfg = load_recipe(REPO / "configs" / "r1-to-7b.yaml",
                      ["teacher.base_url=null", "teacher.backend=vllm_serve"])
    Stage(tmp_path, "train").complete(model="train/model")
    served = {m.role: m.served for m in eval_models(cfg, tmp_path)}
    assert served == {"teacher": "endpoint", "base": "vllm", "student": "vllm"}
    cfg = load_recipe(REPO / "configs" / "r1-to-7b.yaml", ["teacher.base_url=null"])
    assert eval_models(cfg, tmp_path)[0].served == "vllm"     # a local model: served here
