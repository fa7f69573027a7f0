"""The toy world: tokenizer round trip, the task families' references and splits, the students'
sizes, the MoE teacher's loss and cache, and its accuracy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distill.toy import resolve_model
from distill.toy.arch import build_teacher
from distill.toy.models import model_key
from distill.toy.tasks import CATEGORIES, _space, _split_of, make_tasks
from distill.toy.teacher import _batch, encode, is_correct, score
from distill.toy.tokenizer import build_tokenizer


def test_tokenizer_round_trips_and_pad_is_not_eos():
    tok = build_tokenizer()
    task = make_tasks("code", 1, 0)[0]
    text = tok.apply_chat_template(
        task["messages"] + [{"role": "assistant", "content": task["reference"]}], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    ids, labels = encode(tok, task, task["reference"])
    trained = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert trained == task["reference"] + "<|im_end|>"  # the stop token is trained, the prompt is not


def test_teacher_loss_includes_the_load_balancing_loss():
    import torch
    model, tok = build_teacher()
    tasks = make_tasks("arith", 4, 0)
    input_ids, labels, attn = _batch([encode(tok, t, t["reference"]) for t in tasks], tok.pad_token_id)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attn, labels=labels)
        ce = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1))
    assert float(out.aux_loss) > 0
    assert float(out.loss) == pytest.approx(float(ce) + model.config.router_aux_loss_coef * float(out.aux_loss),
                                            rel=1e-5)


def test_local_checker_accepts_gold_and_rejects_wrong():
    arith, code = make_tasks("arith", 1, 0, "eval")[0], make_tasks("code", 1, 0, "eval")[0]
    assert is_correct(arith, arith["reference"])
    assert not is_correct(arith, arith["reference"].replace(arith["answer"], str(int(arith["answer"]) + 1)))
    assert is_correct(code, code["reference"])
    assert not is_correct(code, code["reference"].replace("return", "return 1 +"))


def test_mult_references_are_correct_step_by_step():
    import re
    tasks = _space("mult")
    assert len(tasks) == 990 * 8
    for t in tasks:
        a, b = map(int, re.fullmatch(r"What is (\d+)\*(\d)\?", t["prompt"]).groups())
        think = t["reference"].split("<think>")[1].split("</think>")[0]
        *steps, final = think.split(", ")
        assert final == f"so {a * b}" and t["answer"] == str(a * b)
        assert t["subcategory"] == f"digits={len(str(a))}"
        carry, digits = 0, []
        for d in str(a)[::-1]:      # a product per digit, then the carry added when there is one
            assert steps.pop(0) == f"{d}*{b}={int(d) * b}"
            value = int(d) * b
            if carry:
                assert steps.pop(0) == f"{value}+{carry}={value + carry}"
                value += carry
            digits.append(value % 10)
            carry = value // 10
        assert not steps and int(str(carry) + "".join(map(str, digits[::-1]))) == a * b
    assert is_correct({**tasks[0], "family": "mult"}, tasks[0]["reference"])


@pytest.mark.parametrize("family", sorted(CATEGORIES))
def test_eval_split_holds_no_training_prompt(family):
    train = {t["messages"][0]["content"] for t in make_tasks(family, None, 0, "train")}
    held = {t["messages"][0]["content"] for t in make_tasks(family, None, 0, "eval")}
    assert train and held and not train & held
    assert len(train) + len(held) == len(_space(family))
    assert all(_split_of(p) == "eval" for p in held)
    assert 0.07 < len(held) / (len(train) + len(held)) < 0.13
    if family == "mult":    # both difficulties are in both splits
        for split in ("train", "eval"):
            assert {t["subcategory"] for t in make_tasks(family, None, 0, split)} == {"digits=2", "digits=3"}


@pytest.mark.parametrize("name, params, hidden", [("toy:student", 203_776, 64),
                                                  ("toy:student-l", 800_768, 128)])
def test_students_resolve_to_their_own_cached_base(tmp_path, monkeypatch, name, params, hidden):
    from transformers import AutoModelForCausalLM
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    path = Path(resolve_model(name))
    kind = name.removeprefix("toy:")
    assert path.name == f"{kind}-{model_key(kind)}" and resolve_model(name) == str(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen3" and model.config.hidden_size == hidden
    assert sum(p.numel() for p in model.parameters()) == params
    assert model_key("student") != model_key("student-l")


def test_other_names_pass_through():
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert resolve_model("/some/path") == "/some/path"


def test_student_is_saved_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    path = Path(resolve_model("toy:student"))
    assert path.name == f"student-{model_key('student')}" and (path / "config.json").exists()
    assert resolve_model("toy:student") == str(path)
    assert [p.name for p in (tmp_path / "toy").iterdir() if not p.name.startswith(".")] == [path.name]


def test_a_crash_while_caching_leaves_nothing_behind(tmp_path, monkeypatch):
    from distill.toy.models import _cached
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))

    def crash(path):
        (path / "config.json").write_text("{}")  # half a model, then a crash
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _cached("student", crash)
    assert [p.name for p in (tmp_path / "toy").iterdir() if p.is_dir()] == []
    assert Path(resolve_model("toy:student")).joinpath("model.safetensors").exists()


@pytest.fixture(scope="session")
def teacher_path():
    """The real cache (DISTILL_CACHE or ~/.cache/distill): trained once per machine."""
    return resolve_model("toy:teacher")


def test_teacher_cache_trains_once(teacher_path):
    path = Path(teacher_path)
    assert path.name == f"teacher-{model_key('teacher')}"
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    util = json.loads((path / "expert_utilisation.json").read_text())
    assert len(util["per_layer"]) == 4 and all(abs(sum(row) - 1) < 1e-3 for row in util["per_layer"])
    # every expert gets work: the load-balancing loss keeps the router from collapsing
    assert min(min(row) for row in util["per_layer"]) > 0.02
    t0 = time.time()
    assert resolve_model("toy:teacher") == teacher_path
    assert time.time() - t0 < 1.0
    assert not [p for p in path.parent.glob(f".{path.name}.*") if p.is_dir()]  # no temp dir left


def test_trained_teacher_solves_eval_tasks(teacher_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(teacher_path), AutoTokenizer.from_pretrained(teacher_path)
    tasks = make_tasks("arith", 60, 7, "eval") + make_tasks("code", 40, 7, "eval") \
        + make_tasks("mult", 60, 7, "eval")
    res = score(model, tok, tasks)
    # mult is the hard family: 41 of these 60 at the committed schedule (arith 54, code 40 of 40)
    for family, bar in (("arith", 0.85), ("code", 0.9), ("mult", 0.6)):
        assert res[family]["accuracy"] >= bar, res
        assert res[family]["stop_rate"] == 1.0, res
