"""The rehearsal's parts on their own: the dry-run teacher (both dialects, over HTTP, through the
generate and filter stages), the tiny real-architecture students, the vLLM shim's context rule,
and a rehearsal's report that says what it is and is never pushed."""

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from distill.config import Recipe
from distill.errors import InputError
from distill.records import Stage

DATA = Path(__file__).parents[1].parent / "shared" / "data"
TOKENIZERS = DATA / "tokenizers"


@pytest.fixture(scope="module")
def r1_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(TOKENIZERS / "DeepSeek-R1")


def _key(n: int) -> list[dict]:
    return [{"match": f"Compute {i} times {i + 3} and reduce modulo 97.", "kind": "math",
             "answer": str(i * (i + 3) % 97)} for i in range(n)]


def test_outcomes_follow_the_mix_and_the_key(r1_tokenizer):
    from distill.grading.verify import verify
    from distill.serving.dryrun import AnswerKey, DryRun, parse_mix

    key = _key(50)
    dry = DryRun(r1_tokenizer, AnswerKey(key), "vllm", parse_mix("right=0.5,wrong=0.5"))
    right = 0
    for e in key:
        resp = dry.complete({"messages": [{"role": "user", "content": e["match"] + " Show work."}],
                             "n": 4, "max_tokens": 2000})
        assert len(resp["choices"]) == 4
        for c in resp["choices"]:
            ok = verify({"id": "x", "verifier": "math", "answer": e["answer"]},
                        c["message"]["content"]).ok
            right += ok
    assert dry.metrics["outcome_right"] == right          # right exactly when it says so
    assert 60 <= right <= 140                             # half of 200, by the hash
    assert dry.metrics["samples"] == 200


def test_truncated_answers_fill_max_tokens_and_stop_with_length(r1_tokenizer):
    from distill.serving.dryrun import AnswerKey, DryRun, parse_mix
    dry = DryRun(r1_tokenizer, AnswerKey(_key(1)), "vllm", parse_mix("truncated=1"))
    resp = dry.complete({"messages": [{"role": "user", "content": _key(1)[0]["match"]}],
                         "n": 2, "max_tokens": 300})
    for c in resp["choices"]:
        assert c["finish_reason"] == "length" and c["message"]["content"] is None
        n = len(r1_tokenizer(c["message"]["reasoning_content"], add_special_tokens=False)["input_ids"])
        assert 290 <= n <= 310
    assert resp["usage"]["completion_tokens"] == 600


@pytest.fixture(scope="module")
def deepseek_endpoint(tmp_path_factory):
    """The dry-run teacher as DeepSeek's API: a key demanded, one choice per request."""
    from distill.serving.launcher import free_port, launched
    path = tmp_path_factory.mktemp("dryrun") / "key.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in _key(30)))
    os.environ["DRYRUN_TEST_KEY"] = "sk-test-123"
    port = free_port()
    cmd = [sys.executable, "-m", "distill.serving.dryrun", "--tokenizer", str(TOKENIZERS / "DeepSeek-R1"),
           "--answers", str(path), "--dialect", "deepseek", "--model", "deepseek-reasoner",
           "--api-key-env", "DRYRUN_TEST_KEY", "--port", str(port)]
    with launched(cmd, f"http://127.0.0.1:{port}/health", path.parent / "log", 120):
        yield f"http://127.0.0.1:{port}/v1"


def test_deepseek_dialect_demands_the_key_and_answers_one_choice(deepseek_endpoint):
    body = {"model": "deepseek-reasoner", "n": 4, "max_tokens": 1000,
            "messages": [{"role": "system", "content": "You are a careful mathematician. " * 20},
                         {"role": "user", "content": _key(1)[0]["match"]}]}
    r = httpx.post(deepseek_endpoint + "/chat/completions", json=body, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    auth = {"Authorization": "Bearer sk-test-123"}
    first = httpx.post(deepseek_endpoint + "/chat/completions", json=body, headers=auth, timeout=30).json()
    again = httpx.post(deepseek_endpoint + "/chat/completions", json=body, headers=auth, timeout=30).json()
    assert len(first["choices"]) == 1                      # `n` is ignored, as DeepSeek does
    u1, u2 = first["usage"], again["usage"]
    assert u1["prompt_cache_hit_tokens"] == 0 and u1["prompt_tokens"] > 128
    # The second time, the prompt is served from the context cache in 64-token units.
    assert u2["prompt_cache_hit_tokens"] == u2["prompt_tokens"] // 64 * 64 > 0
    assert u2["prompt_tokens_details"]["cached_tokens"] == u2["prompt_cache_hit_tokens"]
    assert 0 < u1["completion_tokens_details"]["reasoning_tokens"] < u1["completion_tokens"]
    assert first["choices"][0]["message"]["reasoning_content"]


def _recipe(base_url: str, prompts: Path, **generate) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "dry"},
        "prompts": {"sources": [{"name": "modmath", "kind": "jsonl", "path": str(prompts),
                                 "category": "reasoning", "prompt_field": "problem"}]},
        "teacher": {"model": "deepseek-reasoner", "base_url": base_url,
                    "api_key_env": "DRYRUN_TEST_KEY"},
        "generate": {"samples_per_prompt": 4, "max_tokens": 2000, "max_retries": 2,
                     "backoff_s": 0.01, "price_per_m_input": 0.55, "price_per_m_output": 2.19,
                     "price_per_m_cached_input": 0.14, **generate},
        "filter": {"decontaminate": "none", "dedup": "exact", "workers": 2},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"]},
    })


def test_generate_and_filter_count_what_the_dry_run_teacher_wrote(deepseek_endpoint, tmp_path):
    """Every outcome the endpoint chose lands in the filter's counts under its own filter: the
    pipeline's dialect handling, cost and format checks against a known truth."""
    from distill.filters import run_filter
    from distill.generate import run_generate
    from distill.prompts import run_prompts

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"problem": e["match"], "answer": e["answer"]}) + "\n"
                           for e in _key(30)))
    before = httpx.get(deepseek_endpoint.removesuffix("/v1") + "/metrics").json()
    cfg = _recipe(deepseek_endpoint, src, max_n_per_request=1)
    run_prompts(cfg, tmp_path / "run")
    run_generate(cfg, tmp_path / "run")
    counts = run_filter(cfg, tmp_path / "run")
    after = httpx.get(deepseek_endpoint.removesuffix("/v1") + "/metrics").json()
    made = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert made["samples"] == 120 == counts["total"]
    assert made["requests"] == 120                         # one per sample: n is ignored
    rejected = counts["rejected"]
    assert rejected.get("truncated", 0) == made.get("outcome_truncated", 0)
    assert rejected.get("think", 0) == made.get("outcome_unbalanced", 0)
    assert rejected.get("answer", 0) == made.get("outcome_no_answer", 0)
    assert rejected.get("verify", 0) == made.get("outcome_wrong", 0)
    assert counts["kept"] == made["outcome_right"] > 0
    manifest = Stage(tmp_path / "run", "generate").manifest()
    assert manifest["reasoning_tokens"] > 0 and manifest["cost"] > 0


def test_tiny_students_keep_the_real_vocabulary_positions_and_tokens(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from distill.plan.params import load_config
    from distill.rehearse.models import build_tiny

    for hub_id, folder in (("Qwen/Qwen2.5-Math-7B", "Qwen2.5-Math-7B"),
                           ("Qwen/Qwen3-8B-Base", "Qwen3-8B-Base")):
        real, _ = load_config(hub_id)
        path = build_tiny(hub_id, str(TOKENIZERS / folder), out=tmp_path / folder)
        cfg = AutoConfig.from_pretrained(path)
        assert cfg.vocab_size == real["vocab_size"]
        assert cfg.max_position_embeddings == real["max_position_embeddings"]
        assert cfg.model_type == real["model_type"] and cfg.architectures == real["architectures"]
        assert cfg.tie_word_embeddings == real["tie_word_embeddings"]
        assert cfg.eos_token_id == real["eos_token_id"] and cfg.num_hidden_layers == 2
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.get_input_embeddings().weight.shape[0] == real["vocab_size"]
        assert sum(p.numel() for p in model.parameters()) < 25_000_000
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.chat_template == AutoTokenizer.from_pretrained(TOKENIZERS / folder).chat_template


def test_vllm_shim_refuses_what_does_not_fit_as_vllm_does(tmp_path):
    """The shim serves under vLLM's context rule: --max-model-len is enforced with vLLM's 400
    (never a silently shorter answer); GPU-only flags are accepted and named."""
    from distill.rehearse.models import build_tiny
    from distill.serving.launcher import free_port, launched

    model = build_tiny("Qwen/Qwen2.5-Math-1.5B", str(TOKENIZERS / "Qwen2.5-Math-1.5B"))
    port = free_port()
    cmd = [sys.executable, "-m", "distill.rehearse.vllm_shim", "serve", str(model), "--port",
           str(port), "--served-model-name", "student", "--max-model-len", "96",
           "--data-parallel-size", "8", "--gpu-memory-utilization", "0.9"]
    log = tmp_path / "vllm.log"
    with launched(cmd, f"http://127.0.0.1:{port}/health", log, 120, what="vllm shim"):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": "student", "messages": [{"role": "user", "content": "2+2?"}]}
        r = httpx.post(url, json={**body, "max_tokens": 1000}, timeout=60)
        assert r.status_code == 400 and "maximum context length is 96" in r.json()["error"]["message"]
        r = httpx.post(url, json={**body, "max_tokens": 8, "temperature": 0}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 8
    text = log.read_text()
    assert "rehearsal: vllm serve" in text and "--data-parallel-size 8" in text


def _rehearsal_cfg(**publish) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "r1-to-7b-rehearsal", "rehearsal": True},
        "prompts": {"sources": [{"name": "a", "kind": "toy", "family": "arith", "category": "reasoning"}]},
        "teacher": {"model": "deepseek-ai/DeepSeek-R1"},
        "train": {"student": "Qwen/Qwen2.5-Math-7B"},
        "eval": {"benchmarks": ["toy_arith"]},
        "publish": publish,
    })


def test_a_rehearsal_card_says_so_and_never_names_the_base_model():
    from distill.publish.card import build_card, report_title
    cfg = _rehearsal_cfg()
    text = str(build_card(cfg, [], {}, {}, {}))
    assert "A rehearsal, not a model" in text and "- rehearsal" in text
    assert "base_model" not in text.split("---")[1]       # not listed as a fine-tune of the base
    assert report_title(cfg).startswith("REHEARSAL")
    real = Recipe.model_validate({**cfg.model_dump(), "run": {"name": "r1-to-7b"}})
    assert "base_model: Qwen/Qwen2.5-Math-7B" in str(build_card(real, [], {}, {}, {}))


def test_a_rehearsal_is_never_pushed(tmp_path, monkeypatch):
    from distill.publish import hub
    from distill.publish.stage import run_publish

    eval_stage = Stage(tmp_path, "eval")
    eval_stage.write_json("scores.json", [])
    eval_stage.complete()
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with pytest.raises(InputError, match="never pushed"):
        run_publish(_rehearsal_cfg(push=True, hub_repo="org/model"), tmp_path)
    with pytest.raises(InputError, match="never pushed"):
        hub.push_folders(_rehearsal_cfg(push=True, hub_repo="org/model"), {}, "hf_x")


def test_a_served_student_stops_at_its_templates_end_of_turn():
    """A base Qwen ends turns with <|im_end|> but stops only at <|endoftext|>: eval sends its
    end of turn as vLLM's stop_token_ids, which distill's server honours as vLLM does."""
    from distill.eval.models import end_of_turn_stops
    from distill.rehearse.models import build_tiny
    from distill.serving.launcher import serve_local

    model = build_tiny("Qwen/Qwen2.5-Math-1.5B", str(TOKENIZERS / "Qwen2.5-Math-1.5B"))
    assert end_of_turn_stops(str(model)) == [151645]          # <|im_end|>
    assert end_of_turn_stops("toy:student") == []             # already stops at its end of turn
    body = {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 6, "temperature": 0}
    with serve_local(str(model)) as (url, name):
        free = httpx.post(url + "/chat/completions", json={**body, "model": name}, timeout=60).json()
        assert free["usage"]["completion_tokens"] == 6 and free["choices"][0]["finish_reason"] == "length"
        # Greedy decoding writes the same first token again: made a stop token, it ends the answer.
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model)
        text = tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        import torch
        from transformers import AutoModelForCausalLM
        net = AutoModelForCausalLM.from_pretrained(model)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            first = int(net(ids).logits[0, -1].argmax())
        stopped = httpx.post(url + "/chat/completions", timeout=60,
                             json={**body, "model": name, "stop_token_ids": [first]}).json()
        assert stopped["choices"][0]["finish_reason"] == "stop"
        assert stopped["usage"]["completion_tokens"] == 1
