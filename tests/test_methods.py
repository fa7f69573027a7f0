"""Each training method, from the recipe, makes the toy student better than the model it
started from, on the toy benchmarks' held-out split (scores, not just a finished run).

The data is real: the toy MoE teacher served by distill's server writes the traces with its
top-k logprobs, the filter stage verifies them, and every method trains on that dataset stage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.config import recipe_path
from distill.pipeline import run_stage
from distill.records import RunDir
from distill.toy.tasks import make_tasks
from distill.train import run_train

pytestmark = pytest.mark.slow

EVAL = make_tasks("arith", 80, 3, "eval") + make_tasks("code", 60, 3, "eval")


def _cfg(*overrides: str):
    return load_recipe(recipe_path("smoke"), ["generate.top_logprobs=4", *overrides])


def _score(model_dir, **kw) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.toy.teacher import score
    r = score(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir),
              EVAL, **kw)
    return {family: r[family]["accuracy"] for family in ("arith", "code")}


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """prompts -> generate (with the teacher's top-4 logprobs) -> filter, once per module."""
    run = tmp_path_factory.mktemp("traces")
    cfg = _cfg()
    for stage in ("prompts", "generate", "filter"):
        run_stage(stage, cfg, run)
    return run


def _run_dir(traces: Path, tmp_path: Path) -> Path:
    shutil.copytree(traces / "dataset", tmp_path / "dataset")
    return tmp_path


@pytest.fixture(scope="module")
def weak_student(traces, tmp_path_factory) -> Path:
    """2 epochs of SFT (a few percent right): a pretrained base for LoRA. LoRA adapts a model
    that already has useful weights; on the random-init toy student (frozen random embeddings
    and head) it only learns token frequencies."""
    return run_train(_cfg("train.epochs=2"), _run_dir(traces, tmp_path_factory.mktemp("sft2")))


@pytest.fixture(scope="module")
def sft_student(traces, tmp_path_factory) -> Path:
    """The smoke recipe's SFT (7 epochs): the starting point of on-policy distillation, which,
    as in the published recipes, follows SFT to its end. A 4-epoch start was on the steep part
    of the curve: from one teacher sample to the next it sampled 20% / 83% (arith / code) or
    14% / 11%, and from the second on-policy gained 2 points where it gained 17 from the first."""
    return run_train(_cfg(), _run_dir(traces, tmp_path_factory.mktemp("sft")))


def test_logit_kd_student_beats_base(traces, tmp_path):
    from distill.toy import resolve_model
    run = _run_dir(traces, tmp_path)
    # The smoke recipe's 7 epochs: at 4 the student is on the steep part of its curve, where
    # runs on different machines landed 20 points apart (22% to 60% on code).
    model_dir = run_train(_cfg("train.method=logit_kd", "train.kd.weight=0.5"), run)
    lineage = json.loads((run / "train" / "lineage.json").read_text())
    records = RunDir(run).stage("dataset").manifest()["records"]
    assert lineage["method"] == "logit_kd"
    assert lineage["kd"]["aligned"] == records and lineage["kd"]["unaligned"] == 0
    base, trained = _score(resolve_model("toy:student")), _score(model_dir)
    for family in ("arith", "code"):
        assert trained[family] >= base[family] + 0.3, (base, trained)


def test_lora_student_beats_its_base(weak_student, traces, tmp_path):
    run = _run_dir(traces, tmp_path)
    model_dir = run_train(_cfg("train.adapter=lora", f"train.student={weak_student}", "train.epochs=6",
                               "train.lora.r=16", "train.lora.alpha=32", "train.lora.dropout=0"), run)
    assert (run / "train" / "adapter" / "adapter_model.safetensors").exists()
    base, trained = _score(weak_student), _score(model_dir)
    for family in ("arith", "code"):
        assert trained[family] >= base[family] + 0.3, (base, trained)


def test_on_policy_with_a_local_teacher_beats_its_start(sft_student, traces, tmp_path):
    """Reverse KL on the student's own samples at temperature 1 sharpens it where the teacher is
    sure: the share of wrong sampled answers (16 samples per task) falls by over a fifth from
    the SFT student it started from. Measured after 400 steps on three teacher samples, whose
    SFT students started far apart: 21.6% wrong to 14.7% (-32%) and 50.4% to 29.8% (-41%) with
    8 samples, 17.1% to 10.0% (-42%) with 16. Greedy accuracy is not what it sharpens (95% to
    89% on arith in the third). The share wrong, not points gained: a start near the ceiling
    (90% and 99% on code) has few points left to gain. 200 steps gained half as much."""
    run = _run_dir(traces, tmp_path)
    model_dir = run_train(_cfg("train.method=on_policy", f"train.student={sft_student}",
                               "train.max_steps=400", "train.learning_rate=2e-3", "train.warmup_ratio=0.1",
                               "train.on_policy.max_completion_length=120"), run)
    assert json.loads((run / "train" / "lineage.json").read_text())["method"] == "on_policy"
    before = _score(sft_student, temperature=1.0, samples=16)
    after = _score(model_dir, temperature=1.0, samples=16)
    n = {"arith": 80, "code": 60}

    def wrong(acc: dict) -> float:
        return sum((1 - acc[f]) * n[f] for f in n) / sum(n.values())
    assert wrong(after) < 0.8 * wrong(before), (before, after)


def test_on_policy_with_a_teacher_server_scores_through_prompt_logprobs(sft_student, traces, tmp_path):
    """The server variant: the teacher behind an OpenAI-compatible server answers TRL's
    /v1/completions prompt_logprobs requests for every student completion."""
    import httpx
    import torch
    from safetensors.torch import load_file

    from distill.serving.launcher import serve_local
    run = _run_dir(traces, tmp_path)
    with serve_local("toy:teacher") as (base_url, _):
        root = base_url.removesuffix("/v1")
        before = httpx.get(f"{root}/metrics").json()
        model_dir = run_train(_cfg("train.method=on_policy", "train.on_policy.teacher=server",
                                   f"train.on_policy.teacher_url={base_url}", f"train.student={sft_student}",
                                   "train.max_steps=10", "train.learning_rate=3e-4",
                                   "train.on_policy.max_completion_length=120"), run)
        after = httpx.get(f"{root}/metrics").json()
    assert after["requests"] - before["requests"] >= 10          # one scoring request per step at least
    assert after["prompt_tokens"] - before["prompt_tokens"] > 10 * 16 * 20
    start, end = load_file(sft_student / "model.safetensors"), load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)
