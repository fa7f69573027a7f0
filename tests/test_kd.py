"""Logit distillation pieces and the tokenizer / template checks that guard every method."""

from __future__ import annotations

import math

import pytest
import torch

from distill.errors import InputError
from distill.chat import check_template_keeps_reasoning
from distill.train.common import vocabulary_problem
from distill.train.kd import KDCollator, topk_forward_kl
from distill.train.kd_data import kd_examples


def test_topk_kl_over_the_whole_vocabulary_is_the_exact_kl():
    torch.manual_seed(0)
    V = 7
    student, teacher = torch.randn(3, V), torch.randn(3, V)
    lp_t = torch.log_softmax(teacher, -1)
    top_lp, top_ids = lp_t.topk(V)
    got = topk_forward_kl(student, top_ids, top_lp)
    want = (lp_t.exp() * (lp_t - torch.log_softmax(student, -1))).sum(-1)
    assert torch.allclose(got, want, atol=1e-5)
    same = topk_forward_kl(teacher, top_ids, top_lp)  # student == teacher: no divergence
    assert same.abs().max() < 1e-5


def test_topk_kl_is_the_kl_between_top_k_plus_tail_buckets():
    torch.manual_seed(1)
    V, k = 10, 3
    student, teacher = torch.randn(2, V), torch.randn(2, V)
    lp_t, lp_s = torch.log_softmax(teacher, -1), torch.log_softmax(student, -1)
    top_lp, top_ids = lp_t.topk(k)
    got = topk_forward_kl(student, top_ids, top_lp)
    for i in range(2):
        p = [math.exp(v) for v in top_lp[i].tolist()]
        q = [math.exp(lp_s[i, j].item()) for j in top_ids[i].tolist()]
        p.append(1 - sum(p))
        q.append(1 - sum(q))
        assert got[i].item() == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), abs=1e-5)


def test_topk_kl_ignores_padded_slots_and_teaches_the_student_the_teacher():
    torch.manual_seed(2)
    V = 12
    target = torch.log_softmax(torch.randn(V) * 2, -1)
    top_lp, top_ids = target.topk(4)
    top_lp = torch.cat([top_lp, torch.tensor([float("-inf")])])[None]   # one padded slot
    top_ids = torch.cat([top_ids, torch.tensor([0])])[None]
    logits = torch.zeros(1, V, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    first = None
    for _ in range(300):
        loss = topk_forward_kl(logits, top_ids, top_lp).mean()
        first = first if first is not None else loss.item()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = torch.softmax(logits.detach()[0], -1)
    assert loss.item() < 1e-3 < first
    assert torch.allclose(q[top_ids[0, :4]], top_lp[0, :4].exp(), atol=1e-2)  # top-k matched
    assert q.sum() - q[top_ids[0, :4]].sum() == pytest.approx(1 - top_lp[0, :4].exp().sum().item(), abs=1e-2)


def _toy_tok():
    from distill.toy.tokenizer import build_tokenizer
    return build_tokenizer()


def _record(tok, trace: str, tokens=None, k: int = 2) -> dict:
    ids = tok(trace, add_special_tokens=False).input_ids + [tok.eos_token_id]
    tokens = ids if tokens is None else tokens
    return {"id": "r", "messages": [{"role": "user", "content": "1+1"},
                                    {"role": "assistant", "content": trace}],
            "teacher_logprobs": {"tokens": tokens, "top_ids": [[t, 5][:k] for t in ids],
                                 "top_logprobs": [[-0.1, -2.5][:k] for _ in ids]}}


def test_teacher_tokens_are_located_in_the_assistant_span():
    tok = _toy_tok()
    trace = "<think>1+1=2</think>2"
    as_ids = _record(tok, trace)
    as_text = _record(tok, trace, tokens=[tok.convert_ids_to_tokens(i) for i in
                                          tok(trace, add_special_tokens=False).input_ids + [tok.eos_token_id]])
    wrong = _record(tok, trace, tokens=tok("<think>9+9=18</think>18", add_special_tokens=False).input_ids)
    examples, counts = kd_examples([as_ids, as_text, wrong, {**as_ids, "teacher_logprobs": None}], tok, 256)
    assert counts == {"aligned": 2, "unaligned": 1, "no_logprobs": 1, "dropped_too_long": 0,
                      "kd_tokens": 2 * len(as_ids["teacher_logprobs"]["tokens"])}
    ex = examples[0]
    n = len(as_ids["teacher_logprobs"]["tokens"])
    assert ex["input_ids"][ex["kd_start"]:ex["kd_start"] + n] == as_ids["teacher_logprobs"]["tokens"]
    assert tok.decode(ex["input_ids"][:ex["kd_start"]]).endswith("<|im_start|>assistant\n")
    assert examples[1]["kd_start"] == ex["kd_start"] and examples[2]["kd_start"] == -1
    # every KD position is also a CE position (assistant tokens only)
    assert all(ex["labels"][p] != -100 for p in range(ex["kd_start"], ex["kd_start"] + n))
    batch = KDCollator(tok.pad_token_id)(examples[:3])
    assert batch["kd_mask"].sum(1).tolist() == [n, n, 0]
    assert batch["kd_ids"].shape[-1] == 2 and torch.isinf(batch["kd_lp"][2]).all()
    # a trace longer than max_length is dropped whole (a cut trace never stops), and counted
    short, counts = kd_examples([as_ids, _record(tok, "<think>1</think>1")], tok, len(ex["input_ids"]) - 1)
    assert len(short) == 1 and counts["dropped_too_long"] == 1 and counts["aligned"] == 1
    with pytest.raises(InputError, match="longer than train.max_length"):
        kd_examples([as_ids], tok, 10)


def test_vocabulary_mismatch_is_named_with_sizes():
    tok = _toy_tok()
    other = _toy_tok()
    other.add_tokens(["<tool>"])
    assert vocabulary_problem(tok, _toy_tok(), "student", "teacher") is None
    msg = vocabulary_problem(tok, other, "Qwen/Qwen2.5-7B", "deepseek-ai/DeepSeek-R1")
    assert f"{len(other):,}-token vocabulary" in msg and f"{len(tok):,}" in msg
    assert "GOLD" in msg and "method: sft" in msg


@pytest.mark.parametrize("old, new, error", [
    # DeepSeek-R1-Distill's template keeps only what follows </think>
    ("{{ message['content'] + '<|im_end|>' }}",
     "{{ message['content'].split('</think>')[-1] + '<|im_end|>' }}", "drops the <think> reasoning"),
    # no end-of-turn token after the answer: nothing to learn to stop on
    ("{{ message['content'] + '<|im_end|>' }}", "{{ message['content'] }}", "never be taught to stop"),
])
def test_templates_that_would_train_a_broken_student_are_refused(old, new, error):
    tok = _toy_tok()
    tok.chat_template = tok.chat_template.replace(old, new)
    with pytest.raises(InputError, match=error):
        check_template_keeps_reasoning(tok, "bad-template")
    check_template_keeps_reasoning(_toy_tok(), "toy")  # the toy template passes
