"""The teacher server (a real subprocess on 127.0.0.1 with a tiny random MoE model) and the
async client and its limits (against the stand-in server, which fails on purpose)."""

import asyncio
import json
import math
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from distill.errors import InputError
from distill.teacher.client import Job, complete_all, parse_choice
from distill.teacher.limits import Limits, backoff, http_error, parse_retry_after
from teacher_standin import Running, StandIn
from distill.serving.launcher import free_port, serve_local
from distill.serving.server import split_reasoning

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


def test_a_seeded_request_samples_the_same_alone_or_in_a_batch(server):
    body = dict(temperature=0.9, top_p=0.95, max_tokens=16, n=2)
    alone = chat(server, seed=21, **body).json()["choices"]
    root = server[0].removesuffix("/v1")
    before = httpx.get(f"{root}/metrics").json()["batches"]
    with ThreadPoolExecutor(6) as pool:   # batched with other seeded requests
        together = list(pool.map(lambda seed: chat(server, seed=seed, **body).json()["choices"],
                                 [5, 21, 8, 9, 10, 11]))
    assert httpx.get(f"{root}/metrics").json()["batches"] - before < 6
    texts = [[json.dumps(c["message"], sort_keys=True) for c in choices]
             for choices in [alone] + together]
    assert texts[0] == texts[2]
    assert texts[0][0] != texts[0][1]               # the request's two rows: two samples
    assert len({t for pair in texts for t in pair}) >= 10   # other seeds, other samples


def test_seeded_samples_follow_the_model_distribution(server):
    # 2,048 one-token samples of eight seeded requests against the model's own probabilities.
    first = [c["logprobs"]["content"][0] for seed in range(8)
             for c in chat(server, seed=seed, n=256, temperature=1.0, max_tokens=1,
                           logprobs=True, top_logprobs=5).json()["choices"]]
    n = len(first)
    counts = Counter(f["token"] for f in first)
    for top in first[0]["top_logprobs"]:
        p = math.exp(top["logprob"])
        assert abs(counts[top["token"]] / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (top, counts)


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
def standin():
    """The stand-in server: key `flaky` fails with 503-like 500 then 429 then answers; `bad` is
    a 400; `slow` hangs past the client's timeout; `torn` is dropped, then malformed, then
    answers; others answer at once."""
    app = StandIn(retry_after_s=0.05, hang_s=3.0, script={
        "flaky": ["500", "429"], "bad": ["400"], "slow": ["hang"] * 5, "torn": ["drop", "malformed"]})
    with Running(app) as s:
        yield s.url, app.stats


def job(key: str, n: int = 1) -> Job:
    return Job(key=key, messages=[{"role": "user", "content": key}], n=n, temperature=0.6,
               top_p=0.95, max_tokens=16)


def attempts(stats) -> Counter:
    return Counter(key for key, _, _ in stats.log)


def test_client_retries_then_reports_failures(standin):
    url, stats = standin
    done = {}
    failures = complete_all(url, "m", [job("flaky", n=2), job("bad"), job("ok"), job("torn")],
                            lambda j, r: done.__setitem__(j.key, r), max_retries=3, backoff_s=0.01,
                            api_key="secret")
    assert attempts(stats) == {"flaky": 3, "bad": 1, "ok": 1, "torn": 3}  # 400 is not retried
    assert [(f.job.key, f.kind, f.retryable, "HTTP 400" in f.reason) for f in failures] == [
        ("bad", "http_400", False, True)]
    assert set(done) == {"flaky", "ok", "torn"}
    assert done["flaky"].attempts == 3 and done["ok"].attempts == 1
    assert [(c.reasoning, c.content) for c in done["flaky"].choices] == [
        ("thinking about flaky (0)", "answer 0 to flaky"), ("thinking about flaky (1)", "answer 1 to flaky")]
    assert done["flaky"].usage["completion_tokens"] == 32  # 2 x max_tokens
    assert stats.auth == {"Bearer secret": 8}


def test_client_gives_up_after_last_retry(standin):
    url, stats = standin
    failures = complete_all(url, "m", [job("slow")], lambda j, r: None, max_retries=1,
                            timeout_s=0.3, backoff_s=0.01)
    assert attempts(stats)["slow"] == 2
    assert [(f.kind, f.attempts) for f in failures] == [("timeout", 2)]
    assert "after 2 attempts" in failures[0].reason


def test_client_stops_the_run_on_a_bad_key():
    """A 401 means every request would fail: stop, and report the rest as not sent."""
    app = StandIn(script={"a": ["401"]})
    with Running(app) as s:
        failures = complete_all(s.url, "m", [job(k) for k in "abcde"], lambda j, r: None,
                                max_concurrency=1, backoff_s=0.01)
    assert app.stats.requests == 1
    assert [(f.job.key, f.kind) for f in failures] == [("a", "http_401")] + [(k, "not_sent") for k in "bcde"]
    assert "HTTP 401" in failures[1].reason


def test_client_on_done_error_propagates(standin):
    url, _ = standin

    def boom(j, r):
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        complete_all(url, "m", [job("ok"), job("ok2")], boom, backoff_s=0.01)


def test_backoff_honours_retry_after_and_caps_jitter():
    random.seed(0)
    assert all(2.0 <= backoff(3, 1.0, 60.0, retry_after=2.0) <= 2.2 for _ in range(100))
    waits = [backoff(a, 1.0, 8.0) for a in range(10) for _ in range(50)]
    assert max(waits) <= 8.0 and min(waits) >= 0.0
    assert max(backoff(0, 1.0, 60.0) for _ in range(100)) <= 1.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_error_classes():
    assert http_error(429, "", "3").retryable and http_error(429, "", "3").retry_after == 3.0
    assert http_error(503, "", None).retryable and http_error(529, "", None).retryable
    assert not http_error(400, "context too long", None).retryable
    assert http_error(401, "", None).abort and http_error(402, "no credit", None).abort
    assert not http_error(400, "", None).abort


class _Clock:
    """A fake monotonic clock that asyncio.sleep advances: paces are checked by arithmetic."""
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    async def sleep(self, s):
        self.now += max(s, 0)


def test_pace_spreads_requests_and_corrects_tokens(monkeypatch):
    import distill.teacher.limits as limits
    clock = _Clock()
    monkeypatch.setattr(limits.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(limits.asyncio, "sleep", clock.sleep)

    async def run():
        rpm = limits.Pace(600)  # 10 a second, one second of burst
        times = []
        for _ in range(30):
            await rpm.acquire()
            times.append(clock.now - 1000.0)
        tpm = limits.Pace(6000)  # 100 tokens a second
        await tpm.acquire(1000)  # an estimate of 1,000 tokens ...
        tpm.adjust(100 - 1000)   # ... that used 100: the next request need not wait 10 s
        t0 = clock.now
        await tpm.acquire(50)
        return times, clock.now - t0
    times, waited = asyncio.run(run())
    assert times[:10] == [0.0] * 10  # a second's worth at once, then one every 0.1 s
    assert [round(b - a, 6) for a, b in zip(times[11:], times[12:])] == [0.1] * 18
    assert times[-1] == pytest.approx(1.9, abs=1e-6)
    assert waited == pytest.approx(0.0, abs=1e-9)


def test_limits_estimate_learns_completion_length():
    lim = Limits(tokens_per_minute=1e6)
    assert lim.estimate(400, 2, 1000) == 100 + 2000  # max_tokens until an answer is seen
    lim.settle(2100, 300, n=2, completion=200)
    assert lim.estimate(400, 2, 1000) == 100 + 200


def test_serves_toy_names_under_their_own_name(tmp_path, monkeypatch):
    """`toy:student` resolves to a saved dense Qwen3 directory; clients ask for it by its toy name."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    with serve_local("toy:student") as (base_url, name):
        assert name == "toy:student"
        assert [m["id"] for m in httpx.get(f"{base_url}/models").json()["data"]] == ["toy:student"]
        r = httpx.post(f"{base_url}/chat/completions", timeout=120,
                       json={"model": name, "messages": MSG, "max_tokens": 3, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in {"stop", "length"}


def test_progress_projects_the_cost_of_the_whole_set(caplog):
    from distill.teacher.progress import Progress
    caplog.set_level("INFO", logger="distill.teacher.progress")
    p = Progress(10, "generate (m)", initial=2, cost_before=0.20, log_every_s=0)
    p.advance(2, tokens=100, cost=0.20)  # 4 of 10 samples for $0.40: $1.00 for all of them
    p.error("http_429")
    assert p.projected_cost() == pytest.approx(1.0)
    p.close()
    line = caplog.records[-1].getMessage()  # not a terminal: logged lines
    assert line.startswith("generate (m): 4/10 samples") and "err=1 (http_429 1)" in line
    assert "$=0.40 ~$1.00" in line
