"""The generate stage against real servers: the project's own server (records, logprobs), the
stand-in server (kill -9 at random points then resume, a 30% fault run, empty and truncated
answers, API keys, the CLI), a stand-in `vllm` command, a stand-in vLLM offline engine, Ray
shards, and `transformers serve`. Assertions are on counts, never on timings."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import httpx
import pytest

from distill.config import Recipe
from distill.generate import run_generate
from distill.records import RunDir, read_jsonl, record_id
from distill.serving.launcher import free_port
from teacher_standin import Running, StandIn

REPO = Path(__file__).resolve().parents[1]


def recipe(model: str, base_url: str | None, teacher: dict | None = None, **generate) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning", "family": "arith"}]},
        "teacher": {"model": model, "base_url": base_url, **(teacher or {})},
        "generate": {"samples_per_prompt": 2, "temperature": 1.0, "max_tokens": 8, "max_retries": 1,
                     "price_per_m_input": 1.0, "price_per_m_output": 2.0, "backoff_s": 0.01, **generate},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"]},
    })


def write_prompts(run_dir: Path, count: int) -> list[dict]:
    stage = RunDir(run_dir).stage("prompts")
    problems = [{"id": f"p{i}", "source": "arith", "category": "reasoning", "subcategory": None,
                 "messages": [{"role": "user", "content": f"{i}+{i}="}], "verifier": "math",
                 "answer": str(2 * i), "tests": None, "entry_point": None} for i in range(count)]
    with stage.writer() as w:
        for p in problems:
            w.write(p)
    stage.complete()
    return problems


def metrics(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/metrics").json()


def all_ids(stage) -> list[str]:
    return [r["id"] for shard in stage.shards() for r in read_jsonl(shard)]


def test_records_fields_and_manifest(tmp_path, server):
    base_url, name = server
    cfg = recipe(name, base_url, top_logprobs=2, seed=3)   # seeded: an untrained teacher may
    # otherwise sample EOS first, and an empty answer is asked again (attempts 2)
    problems = write_prompts(tmp_path, 3)
    run_generate(cfg, tmp_path)
    stage = RunDir(tmp_path).stage("generate")
    recs = list(stage.read())
    gen_hash = cfg.generation_hash()
    assert sorted(r["id"] for r in recs) == sorted(
        record_id(p["id"], i, gen_hash) for p in problems for i in range(2))
    r = recs[0]
    assert r["prompt_id"] in {"p0", "p1", "p2"} and r["answer"] == str(2 * int(r["prompt_id"][1:]))
    assert r["finish_reason"] in {"stop", "length"} and r["gen_hash"] == gen_hash
    assert r["cost"] > 0 and r["usage"]["completion_tokens"] > 0 and r["attempts"] == 1
    assert r["latency_s"] > 0 and r["usage"]["choices"] == 2
    lp = r["teacher_logprobs"]  # compact: sampled token ids, top-k ids and logprobs per token
    assert len(lp["tokens"]) > 0 and len(lp["top_ids"]) == len(lp["tokens"])
    assert all(isinstance(t, int) for t in lp["tokens"])
    assert all(len(ids) == 2 and len(lps) == 2 and lps[0] >= lps[1]
               for ids, lps in zip(lp["top_ids"], lp["top_logprobs"]))
    manifest = stage.manifest()
    assert manifest["samples"] == 6 and manifest["requests"] == 3 and manifest["failures"] == 0
    assert manifest["cost"] == pytest.approx(sum(r["cost"] for r in recs))
    assert manifest["cost"] == pytest.approx(
        (manifest["prompt_tokens"] * 1.0 + manifest["completion_tokens"] * 2.0) / 1e6)


def _generate_in_subprocess(run_dir: Path) -> subprocess.Popen:
    code = ("from distill.config import load_recipe; from distill.generate import run_generate; "
            f"run_generate(load_recipe({str(run_dir / 'recipe.yaml')!r}), {str(run_dir)!r})")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _settle(stats) -> None:
    """Waits until requests a killed client had already sent have all reached the server's log."""
    last, still = len(stats.log), 0
    for _ in range(200):
        time.sleep(0.05)
        still = still + 1 if len(stats.log) == last else 0
        last = len(stats.log)
        if still >= 6:
            return


def test_kill_9_at_random_points_then_resume(tmp_path):
    """kill -9 after a random number of stored samples, four times, then a full run: every
    sample exactly once, and no run asks for a sample that was stored before it started."""
    prompts, samples = 60, 3
    app = StandIn(latency_s=0.05)
    with Running(app) as s:
        cfg = recipe("standin", s.url, samples_per_prompt=samples, max_n_per_request=1, max_concurrency=6)
        RunDir(tmp_path).save_recipe(cfg)
        write_prompts(tmp_path, prompts)
        stage = RunDir(tmp_path).stage("generate")
        rng = random.Random(20240601)
        points = sorted(rng.sample(range(5, prompts * samples - 5), 4))
        for point in points + [None]:
            stored = Counter(r["prompt_id"] for r in stage.read())
            seen = len(app.stats.log)
            proc = _generate_in_subprocess(tmp_path)
            if point is None:
                assert proc.wait(120) == 0
            else:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None:
                    if sum(p.read_text().count("\n") for p in stage.shards()) >= point:
                        break
                    time.sleep(0.005)
                assert proc.poll() is None, "the run ended before it could be killed"
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                _settle(app.stats)
                assert not stage.is_complete()
            asked = Counter(key for key, _, _ in app.stats.log[seen:])
            for i in range(prompts):  # never more requests than the prompt had samples missing
                assert asked[f"{i}+{i}="] <= samples - stored[f"p{i}"], (point, i)
            if point is None:  # the last run asked for exactly what was missing
                assert sum(asked.values()) == prompts * samples - sum(stored.values())
    ids = all_ids(stage)
    assert len(ids) == len(set(ids)) == prompts * samples
    assert stage.is_complete() and stage.manifest()["samples"] == prompts * samples


def test_fault_run_completes_every_prompt_without_duplicates(tmp_path):
    """30% of requests get 429 (Retry-After), 500, a hang past the timeout, a dropped connection
    or a torn JSON body. Every prompt completes; no prompt is answered twice."""
    prompts, samples = 80, 2
    # The timeout is far above the answers' latency, so that only hung requests time out
    # however loaded the machine is.
    app = StandIn(latency_s=0.01, fault_rate=0.3, retry_after_s=0.05, hang_s=4.0, seed=7)
    with Running(app) as s:
        write_prompts(tmp_path, prompts)
        cfg = recipe("standin", s.url, samples_per_prompt=samples, max_retries=10, timeout_s=1.5,
                     max_backoff_s=0.2, max_concurrency=16)
        run_generate(cfg, tmp_path)
    stage = RunDir(tmp_path).stage("generate")
    ids = all_ids(stage)
    assert len(ids) == len(set(ids)) == prompts * samples and stage.is_complete()
    st = app.stats
    keys = {f"{i}+{i}=" for i in range(prompts)}
    assert dict(st.ok_per_key) == {k: 1 for k in keys}  # one good answer per prompt, stored once
    assert dict(st.n_per_key) == {k: samples for k in keys}
    faults = st.requests - st.outcomes["ok"]
    assert set(st.outcomes) == {"ok", "429", "500", "hang", "drop", "malformed"} and faults > 10
    m = stage.manifest()
    assert m["requests"] == st.requests and m["answered"] == prompts
    assert m["wasted_requests"] == faults
    assert sum(m["errors"].values()) == faults
    assert m["errors"]["http_429"] == st.outcomes["429"] and m["errors"]["timeout"] == st.outcomes["hang"]


def test_a_429_with_retry_after_holds_every_request(tmp_path):
    """A 429 with Retry-After is about the account, not the request: the client sends nothing
    until the server said it may (the retried prompt, and the next prompt too)."""
    app = StandIn(script={"0+0=": ["429"]}, retry_after_s=0.6)
    with Running(app) as s:
        write_prompts(tmp_path, 2)
        run_generate(recipe("standin", s.url, samples_per_prompt=1, max_concurrency=1), tmp_path)
    keys = [k for k, _, _ in app.stats.log]
    assert keys == ["0+0=", "1+1=", "0+0="] or keys == ["0+0=", "0+0=", "1+1="]
    assert all(t - app.stats.arrived[0] >= 0.6 for t in app.stats.arrived[1:])


def test_a_rate_limited_api_gets_fewer_requests_than_it_refuses(tmp_path):
    """Against a real limit (40 requests a second) at concurrency 32, every prompt completes and
    most requests are answered, not refused (without the shared pause, ~3 of 4 were 429s)."""
    app = StandIn(latency_s=0.02, limit_per_s=40)
    with Running(app) as s:
        write_prompts(tmp_path, 120)
        run_generate(recipe("standin", s.url, samples_per_prompt=1, max_retries=50,
                            max_concurrency=32, max_backoff_s=2.0), tmp_path)
    assert RunDir(tmp_path).stage("generate").manifest()["samples"] == 120
    assert app.stats.outcomes["ok"] == 120 and app.stats.outcomes["429"] < 120


def test_empty_and_truncated_answers(tmp_path):
    """An empty answer is asked again (and reported if it stays empty); a trace cut at max_tokens
    is stored with finish_reason length."""
    app = StandIn(script={"0+0=": ["empty", "empty"], "1+1=": ["length"], "2+2=": ["empty"] * 6})
    with Running(app) as s:
        write_prompts(tmp_path, 3)
        cfg = recipe("standin", s.url, samples_per_prompt=1, max_retries=3)
        with pytest.raises(RuntimeError, match=r"1 of 3 prompts still miss samples \(empty: 1"):
            run_generate(cfg, tmp_path)
        stage = RunDir(tmp_path).stage("generate")
        by_prompt = {r["prompt_id"]: r for r in stage.read()}
        assert set(by_prompt) == {"p0", "p1"} and not stage.is_complete()
        assert by_prompt["p0"]["attempts"] == 3 and by_prompt["p0"]["content"] == "answer 0 to 0+0="
        assert by_prompt["p1"]["finish_reason"] == "length" and by_prompt["p1"]["content"] == ""
        assert by_prompt["p1"]["reasoning"] == "thinking about 1+1= (0)"
        [failed] = stage.read_json("failed.json")
        assert failed["prompt_id"] == "p2" and failed["kind"] == "empty" and failed["attempts"] == 4
        assert "empty response" in failed["reason"] and failed["retryable"]
        run_generate(cfg, tmp_path)  # the re-run retries the failed prompt only
        assert stage.is_complete() and not (stage.path / "failed.json").exists()
        assert stage.manifest()["truncated"] == 1
    assert Counter(k for k, _, _ in app.stats.log) == {"0+0=": 3, "1+1=": 1, "2+2=": 4 + 3}


def test_new_sampling_settings_make_new_records(tmp_path):
    app = StandIn()
    with Running(app) as s:
        write_prompts(tmp_path, 4)
        run_generate(recipe("standin", s.url), tmp_path)
        run_generate(recipe("standin", s.url, max_concurrency=3, timeout_s=9), tmp_path)  # same key
        assert app.stats.requests == 4
        run_generate(recipe("standin", s.url, temperature=0.5), tmp_path)
        assert app.stats.requests == 8
    stage = RunDir(tmp_path).stage("generate")
    assert Counter(r["gen_hash"] for r in stage.read()) == {  # the old samples are still there
        recipe("standin", None).generation_hash(): 8,
        recipe("standin", None, temperature=0.5).generation_hash(): 8}
    assert stage.manifest()["samples"] == 8


def test_one_sample_per_request_with_seeds(tmp_path):
    app = StandIn()
    with Running(app) as s:
        write_prompts(tmp_path, 2)
        cfg = recipe("standin", s.url, samples_per_prompt=3, max_n_per_request=1, seed=5)
        run_generate(cfg, tmp_path)
    assert sorted((k, n) for k, n, _ in app.stats.log) == [("0+0=", 1)] * 3 + [("1+1=", 1)] * 3
    recs = list(RunDir(tmp_path).stage("generate").read())
    assert sorted((r["prompt_id"], r["sample_index"]) for r in recs) == [
        (p, i) for p in ("p0", "p1") for i in range(3)]


def test_cost_counts_reasoning_and_cached_tokens():
    from distill.generate import cost_of, usage_of
    g = recipe("m", None, price_per_m_input=1.0, price_per_m_output=4.0, price_per_m_reasoning=2.0,
               price_per_m_cached_input=0.25).generate
    deepseek = usage_of({"prompt_tokens": 1000, "completion_tokens": 3000, "prompt_cache_hit_tokens": 400,
                         "completion_tokens_details": {"reasoning_tokens": 2000}}, 1)
    assert deepseek == {"prompt_tokens": 1000, "completion_tokens": 3000, "reasoning_tokens": 2000,
                        "cached_prompt_tokens": 400, "choices": 1}
    assert cost_of(g, deepseek) == pytest.approx((600 * 1 + 400 * 0.25 + 1000 * 4 + 2000 * 2) / 1e6)
    openai = usage_of({"prompt_tokens": 10, "completion_tokens": 5,
                       "prompt_tokens_details": {"cached_tokens": 4}}, 2)
    assert openai["cached_prompt_tokens"] == 4 and openai["reasoning_tokens"] == 0


def test_cli_generate_against_an_endpoint_keeps_the_key_secret(tmp_path):
    """`distill generate RECIPE --run-dir DIR -o teacher.base_url=URL -o teacher.model=NAME`, the
    key from the variable the recipe names: sent as a bearer token, never written or logged."""
    secret = "sk-test-" + "7f3a9c" * 4
    app = StandIn(model="deepseek-reasoner")
    with Running(app) as s:
        run_dir = tmp_path / "run"
        over = ["-o", "prompts.sources.0.count=6", "-o", "prompts.sources.1.count=4",
                "-o", "prompts.sources.2.count=0"]
        env = {**os.environ, "MY_TEACHER_KEY": secret}
        cli = [sys.executable, "-m", "distill.cli"]
        done = subprocess.run(cli + ["prompts", "smoke", "--run-dir", str(run_dir)] + over,
                              capture_output=True, text=True, env=env, cwd=REPO)
        assert done.returncode == 0, done.stderr
        done = subprocess.run(cli + ["generate", "smoke", "--run-dir", str(run_dir), *over,
                                     "-o", f"teacher.base_url={s.url}", "-o", "teacher.model=deepseek-reasoner",
                                     "-o", "teacher.api_key_env=MY_TEACHER_KEY"],
                              capture_output=True, text=True, env=env, cwd=REPO)
        assert done.returncode == 0, done.stderr
        stage = RunDir(run_dir).stage("generate")
        assert stage.is_complete() and stage.manifest()["samples"] == 10
        unset = subprocess.run(cli + ["generate", "smoke", "--run-dir", str(run_dir), *over,
                                      "-o", f"teacher.base_url={s.url}", "-o", "teacher.api_key_env=NOPE_KEY",
                                      "-o", "generate.temperature=0.3"],
                               capture_output=True, text=True, cwd=REPO)
    assert app.stats.auth == {f"Bearer {secret}": 10}
    assert {r["teacher"] for r in stage.read()} == {"deepseek-reasoner"}
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f
    assert secret not in done.stdout + done.stderr
    assert "api_key_env: NOPE_KEY" in (run_dir / "recipe.yaml").read_text()  # the name, never a value
    assert "10/10 samples" in done.stderr and "req/s=" in done.stderr  # the progress line
    # a missing variable is bad input: exit 2, naming it
    assert unset.returncode == 2 and "NOPE_KEY is not set" in unset.stderr


def test_failures_are_reported_and_stage_stays_incomplete(tmp_path):
    write_prompts(tmp_path, 2)
    cfg = recipe("remote", f"http://127.0.0.1:{free_port()}/v1", max_retries=0)  # nobody listens
    with pytest.raises(RuntimeError, match="2 of 2 prompts"):
        run_generate(cfg, tmp_path)
    stage = RunDir(tmp_path).stage("generate")
    assert not stage.is_complete()
    failed = stage.read_json("failed.json")
    assert {f["prompt_id"] for f in failed} == {"p0", "p1"}
    assert all("Connect" in f["reason"] and f["missing_samples"] == [0, 1] and f["kind"] == "connection"
               for f in failed)


def test_managed_vllm_serve(tmp_path, teacher_dir, monkeypatch):
    """`backend: vllm_serve` starts `vllm serve` with the recipe's parallelism and context
    flags, waits for /health, generates, stops it and its engine process, keeps its log. The
    `vllm` here is a stand-in (tests/vllm_standin.py) that runs distill's own server."""
    exe = tmp_path / "vllm"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'vllm_standin.py'} \"$@\"\n")
    exe.chmod(0o755)
    argv_file = tmp_path / "argv.json"
    monkeypatch.setenv("VLLM_STANDIN_ARGV", str(argv_file))
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
    run_dir = tmp_path / "run"
    write_prompts(run_dir, 2)
    vllm = {"executable": str(exe), "tensor_parallel_size": 8, "expert_parallel": True,
            "max_model_len": 40960, "reasoning_parser": "deepseek_r1", "startup_timeout_s": 300}
    cfg = recipe(str(teacher_dir), None, {"backend": "vllm_serve", "vllm": vllm})
    run_generate(cfg, run_dir)
    stage = RunDir(run_dir).stage("generate")
    assert stage.is_complete() and stage.manifest()["samples"] == 4
    args = json.loads(argv_file.read_text())
    assert args[:2] == ["serve", str(teacher_dir)]
    flags = " ".join(args)
    for want in ["--tensor-parallel-size 8", "--enable-expert-parallel", "--max-model-len 40960",
                 "--reasoning-parser deepseek_r1", f"--served-model-name {teacher_dir}"]:
        assert want in flags
    child = int(Path(str(argv_file) + ".child").read_text())
    with pytest.raises(ProcessLookupError):  # the engine process is gone too
        os.kill(child, 0)
    log = (stage.path / "logs" / "vllm-serve.log").read_text()
    assert "serving" in log and "shutting down" in log


def test_vllm_offline_engine(tmp_path, monkeypatch):
    """`backend: vllm_offline` against a stand-in of the `vllm` module's LLM / SamplingParams /
    RequestOutput (vLLM needs a GPU): the same records as over HTTP."""
    calls = {}

    class Logprob:
        def __init__(self, logprob, rank):
            self.logprob, self.rank, self.decoded_token = logprob, rank, "x"

    class Tok:
        def get_vocab(self):
            return {"</think>": 7}

        def convert_tokens_to_ids(self, t):
            return 7

    class LLM:
        def __init__(self, **kw):
            calls["init"] = kw

        def get_tokenizer(self):
            return Tok()

        def chat(self, messages, params, use_tqdm=True):
            calls.setdefault("chat", []).append(len(messages))
            outs = []
            for m, p in zip(messages, params):
                if "9+9" in m[0]["content"]:
                    raise ValueError("prompt too long")
                outputs = [types.SimpleNamespace(
                    text=f"r{i}</think>a{i}", token_ids=[5, 7, 9], finish_reason="stop",
                    logprobs=[{5: Logprob(-0.1, 1), 6: Logprob(-2.5, 2)},
                              {7: Logprob(-0.2, 1), 3: Logprob(-3.0, 2)},
                              {8: Logprob(-0.5, 1), 9: Logprob(-1.5, 2)}] if p.logprobs else None)
                    for i in range(p.n)]
                outs.append(types.SimpleNamespace(prompt_token_ids=[1, 2, 3, 4], outputs=outputs))
            return outs

    class SamplingParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    write_prompts(tmp_path, 10)
    cfg = recipe("deepseek-ai/DeepSeek-R1", None, {"backend": "vllm_offline",
                 "vllm": {"tensor_parallel_size": 8, "expert_parallel": True, "max_model_len": 40960}},
                 top_logprobs=1, max_retries=0)
    with pytest.raises(RuntimeError, match="1 of 10 prompts"):
        run_generate(cfg, tmp_path)
    assert calls["init"]["tensor_parallel_size"] == 8 and calls["init"]["enable_expert_parallel"]
    assert calls["init"]["max_model_len"] == 40960
    assert calls["chat"][0] == 10  # one batch, then one by one after the bad prompt
    stage = RunDir(tmp_path).stage("generate")
    recs = list(stage.read())
    assert len(recs) == 18
    r = recs[0]
    assert (r["reasoning"], r["content"]) == (f"r{r['sample_index']}", f"a{r['sample_index']}")
    assert r["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "reasoning_tokens": 4,
                          "cached_prompt_tokens": 0, "choices": 2}
    # the top-1 of the last step is token 8, though 9 was sampled
    assert r["teacher_logprobs"] == {"tokens": [5, 7, 9], "top_ids": [[5], [7], [8]],
                                     "top_logprobs": [[-0.1], [-0.2], [-0.5]]}
    [failed] = stage.read_json("failed.json")
    assert failed["prompt_id"] == "p9" and failed["kind"] == "engine" and "too long" in failed["reason"]


@pytest.mark.slow
def test_ray_shards_on_two_cpu_workers(tmp_path):
    """`generate.shards: 2` on a local Ray with two CPU workers: each shard writes its own
    record files; together every sample exactly once, and a re-run sends nothing."""
    pytest.importorskip("ray")
    prompts, samples = 40, 2
    app = StandIn(latency_s=0.02)
    with Running(app) as s:
        write_prompts(tmp_path, prompts)
        cfg = recipe("standin", s.url, samples_per_prompt=samples, shards=2, max_concurrency=8)
        run_generate(cfg, tmp_path)
        assert app.stats.requests == prompts
        run_generate(cfg, tmp_path)
        assert app.stats.requests == prompts
    stage = RunDir(tmp_path).stage("generate")
    ids = all_ids(stage)
    assert len(ids) == len(set(ids)) == prompts * samples
    assert len(stage.shards()) == 2 and stage.manifest()["samples"] == prompts * samples
    from distill.shard import shard_of
    for shard in stage.shards():  # one shard's file holds one shard's prompts
        assert len({shard_of(r["prompt_id"], 2) for r in read_jsonl(shard)}) == 1


@pytest.mark.slow
def test_generate_through_transformers_serve(tmp_path, teacher_dir):
    """`transformers serve PATH` serves a local directory under its path as model id. It
    ignores `n` (one choice per request) and logprobs; the stage asks again for the rest."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen([str(exe), "serve", str(teacher_dir), "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        run_dir = tmp_path / "run"
        write_prompts(run_dir, 2)
        run_generate(recipe(str(teacher_dir), f"http://127.0.0.1:{port}/v1", max_tokens=6), run_dir)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    stage = RunDir(run_dir).stage("generate")
    recs = list(stage.read())
    assert len(recs) == 4 and stage.is_complete()
    assert {r["sample_index"] for r in recs} == {0, 1}
    assert all(r["finish_reason"] in {"stop", "length"} for r in recs)
