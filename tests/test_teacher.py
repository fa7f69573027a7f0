"""The teacher server (a real subprocess on 127.0.0.1 with a tiny random MoE model) and the
async client (against a small fake server that fails on purpose)."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from distill.errors import InputError
from distill.teacher.client import Job, complete_all, parse_choice
from distill.teacher.local import free_port, serve_local
from distill.teacher.server import split_reasoning

MSG = [{"role": "user", "content": "12+34="}]


def chat(server, **body):
    base_url, name = server
    r = httpx.post(f"{base_url}/chat/completions", json={"model": name, "messages": MSG, **body}, timeout=120)
    return r


def test_models_and_health(server):
    base_url, name = server
    assert httpx.get(base_url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
    assert [m["id"] for m in httpx.get(f"{base_url}/models").json()["data"]] == [name]


def test_n_gives_n_choices_and_usage(server):
    data = chat(server, n=3, temperature=1.0, max_tokens=6).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    u = data["usage"]
    assert u["prompt_tokens"] > 0 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert 3 <= u["completion_tokens"] <= 18
    assert "reasoning_tokens" in u["completion_tokens_details"]


def test_temperature_zero_is_deterministic(server):
    a = chat(server, temperature=0, max_tokens=12, n=2).json()["choices"]
    b = chat(server, temperature=0, max_tokens=12).json()["choices"]
    texts = {c["message"]["content"] for c in a + b}
    assert len(texts) == 1


def test_seed_reproduces_samples(server):
    a = chat(server, temperature=1.0, max_tokens=12, n=2, seed=7).json()["choices"]
    b = chat(server, temperature=1.0, max_tokens=12, n=2, seed=7).json()["choices"]
    assert [c["message"] for c in a] == [c["message"] for c in b]


def test_max_tokens_gives_length(server):
    data = chat(server, temperature=0, max_tokens=5).json()
    # A random model rarely emits EOS in 5 tokens; if it did, the reason must say stop.
    c = data["choices"][0]
    if data["usage"]["completion_tokens"] == 5:
        assert c["finish_reason"] == "length"
    else:
        assert c["finish_reason"] == "stop"


def test_stop_string_ends_the_text(server):
    full = chat(server, temperature=0, max_tokens=20).json()["choices"][0]["message"]["content"]
    # Pick a character from the middle of the greedy text: the stopped text is what precedes it.
    assert len(full) >= 6, full
    stop = full[4]
    data = chat(server, temperature=0, max_tokens=20, stop=[stop]).json()
    c = data["choices"][0]
    assert c["finish_reason"] == "stop"
    assert c["message"]["content"] == full[: full.index(stop)]
    assert data["usage"]["completion_tokens"] < 20


def test_top_logprobs(server):
    data = chat(server, temperature=1.0, max_tokens=4, logprobs=True, top_logprobs=3).json()
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"]
    for tok in content:
        assert tok["logprob"] <= 0 and isinstance(tok["token"], str)
        alts = [a["logprob"] for a in tok["top_logprobs"]]
        assert len(alts) == 3 and all(lp <= 0 for lp in alts) and alts == sorted(alts, reverse=True)
        assert tok["logprob"] <= alts[0] + 1e-5  # the best alternative is at least as likely


def test_tokens_as_ids_match_the_text(server):
    """vLLM's return_tokens_as_token_ids: "token_id:N", where N decodes to the returned text."""
    from transformers import AutoTokenizer
    from distill.toy import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model("toy:student"))  # the same toy tokenizer
    data = chat(server, temperature=0, max_tokens=30, logprobs=True, top_logprobs=2,
                return_tokens_as_token_ids=True).json()
    c = data["choices"][0]
    ids = [int(t["token"].removeprefix("token_id:")) for t in c["logprobs"]["content"]]
    assert all(t["token"].startswith("token_id:") for t in c["logprobs"]["content"])
    reasoning, content = c["message"]["reasoning_content"], c["message"]["content"]
    assert tok.decode(ids, skip_special_tokens=True) == (
        content if reasoning is None else f"<think>{reasoning}</think>{content}")


def test_completions_prompt_logprobs_match_a_forward_pass(server, teacher_dir):
    """/v1/completions with token-id prompts and prompt_logprobs, as TRL's server distillation
    asks: at each position the top-k with ranks, plus the actual token with its true rank."""
    import torch
    from transformers import AutoModelForCausalLM
    base_url, name = server
    seqs = [[2, 10, 20, 30, 40, 50], [2, 11, 21]]
    r = httpx.post(f"{base_url}/completions", json={"model": name, "prompt": seqs, "max_tokens": 1,
                                                   "temperature": 1.0, "prompt_logprobs": 3}, timeout=60)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert len(choices) == 2 and all(len(c["text"]) <= 1 or c["finish_reason"] for c in choices)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    for seq, c in zip(seqs, choices):
        pl = c["prompt_logprobs"]
        assert len(pl) == len(seq) and pl[0] is None
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([seq]), use_cache=False).logits[0].float(), -1)
        for pos in range(1, len(seq)):
            entries = pl[pos]
            top = sorted(entries.items(), key=lambda kv: kv[1]["rank"])[:3]
            want_ids = ref[pos - 1].topk(3).indices.tolist()
            assert [int(t) for t, _ in top] == want_ids
            actual = entries[str(seq[pos])]
            assert actual["logprob"] == pytest.approx(ref[pos - 1, seq[pos]].item(), abs=1e-4)
            assert actual["rank"] == 1 + int((ref[pos - 1] > ref[pos - 1, seq[pos]]).sum())
    bad = httpx.post(f"{base_url}/completions", json={"prompt": [[5, 10**7]], "max_tokens": 1}, timeout=30)
    assert bad.status_code == 400 and "token ids" in bad.json()["error"]["message"]


def test_bad_requests_get_400(server):
    base_url, _ = server
    r = httpx.post(f"{base_url}/chat/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{base_url}/chat/completions", json={"n": 2}, timeout=30)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    assert chat(server, n=0).status_code == 400
    assert chat(server, model="nope").status_code == 404


def test_concurrent_requests_share_batches(server):
    base_url, _ = server
    root = base_url.removesuffix("/v1")
    before = httpx.get(f"{root}/metrics").json()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: chat(server, n=2, temperature=0.7, max_tokens=8), range(8)))
    assert all(r.status_code == 200 and len(r.json()["choices"]) == 2 for r in results)
    after = httpx.get(f"{root}/metrics").json()
    assert after["requests"] - before["requests"] == 8
    assert after["rows"] - before["rows"] == 16
    assert after["batches"] - before["batches"] < 8  # some requests ran in the same batch


def test_server_that_dies_reports_its_log(tmp_path, teacher_dir):
    with pytest.raises(RuntimeError, match="exited with code") as e:
        with serve_local(str(teacher_dir), log_path=tmp_path / "server.log",
                         extra_args=["--max-batch-rows", "many"]):
            pass
    assert "invalid int value: 'many'" in str(e.value)
    assert str(tmp_path / "server.log") in str(e.value)


def test_missing_model_dir_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="model directory not found"):
        with serve_local(str(tmp_path / "no-such-model")):
            pass


def test_split_reasoning():
    assert split_reasoning("<think>a\nb</think>42") == ("a\nb", "42")
    assert split_reasoning("<think>cut off") == ("cut off", "")
    assert split_reasoning("just text") == (None, "just text")


def test_parse_choice_reads_every_reasoning_field():
    def raw(**message):
        return {"finish_reason": "stop", "message": {"role": "assistant", **message}}
    assert parse_choice(raw(content="A", reasoning_content="R")).reasoning == "R"
    assert parse_choice(raw(content="A", reasoning="R")).reasoning == "R"
    c = parse_choice(raw(content="<think>R</think>A"))
    assert (c.reasoning, c.content) == ("R", "A")
    c = parse_choice(raw(content="<think>R"))
    assert (c.reasoning, c.content) == ("R", "")
    c = parse_choice(raw(content=None, reasoning_content="R"))
    assert (c.reasoning, c.content) == ("R", "")


# ------------------------------------------------------------------------------ client retries

@pytest.fixture
def flaky_server():
    """A fake chat server: key `flaky` fails with 503 then 429 then answers; `bad` is a 400;
    `slow` sleeps past the client's timeout; others answer at once."""
    attempts: dict[str, int] = {}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_route(request: Request):
        body = await request.json()
        key = body["messages"][0]["content"]
        attempts[key] = attempts.get(key, 0) + 1
        if key == "flaky" and attempts[key] == 1:
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if key == "flaky" and attempts[key] == 2:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if key == "bad":
            return JSONResponse({"error": {"message": "messages: bad"}}, status_code=400)
        if key == "slow":
            await asyncio.sleep(2)
        choices = [{"index": i, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"<think>r{i}</think>a{i}"}}
                   for i in range(body.get("n", 1))]
        return {"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 5 * len(choices)}}

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", attempts
    srv.should_exit = True
    t.join(5)


def job(key: str, n: int = 1) -> Job:
    return Job(key=key, messages=[{"role": "user", "content": key}], n=n, temperature=0.6,
               top_p=0.95, max_tokens=16)


def test_client_retries_then_reports_failures(flaky_server):
    base_url, attempts = flaky_server
    done = {}
    failures = complete_all(base_url, "m", [job("flaky", n=2), job("bad"), job("ok")],
                            lambda j, r: done.__setitem__(j.key, r), max_retries=3, backoff_s=0.01,
                            api_key="secret")
    assert attempts == {"flaky": 3, "bad": 1, "ok": 1}  # 400 is not retried
    assert [(j.key, "HTTP 400" in why) for j, why in failures] == [("bad", True)]
    assert set(done) == {"flaky", "ok"}
    assert [(c.reasoning, c.content) for c in done["flaky"].choices] == [("r0", "a0"), ("r1", "a1")]
    assert done["flaky"].usage["completion_tokens"] == 10


def test_client_gives_up_after_last_retry(flaky_server):
    base_url, attempts = flaky_server
    failures = complete_all(base_url, "m", [job("slow")], lambda j, r: None, max_retries=1,
                            timeout_s=0.3, backoff_s=0.01)
    assert attempts["slow"] == 2
    assert len(failures) == 1 and "Timeout" in failures[0][1] and "2 attempts" in failures[0][1]


def test_client_on_done_error_propagates(flaky_server):
    base_url, _ = flaky_server

    def boom(j, r):
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        complete_all(base_url, "m", [job("ok"), job("ok2")], boom, backoff_s=0.01)


def test_serves_toy_names_under_their_own_name(tmp_path, monkeypatch):
    """`toy:student` resolves to a saved dense Qwen3 directory; clients ask for it by its toy name."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    with serve_local("toy:student") as (base_url, name):
        assert name == "toy:student"
        assert [m["id"] for m in httpx.get(f"{base_url}/models").json()["data"]] == ["toy:student"]
        r = httpx.post(f"{base_url}/chat/completions", timeout=120,
                       json={"model": name, "messages": MSG, "max_tokens": 3, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in {"stop", "length"}
