"""Spend caps of the generate stage (`generate.max_usd`, `generate.max_gpu_hours`): the gate
before each request (worst cases of the requests in flight, waiting, stopping), the CLI's exit 2
and its message, whole records and an exact resume, the stand-in's request log replayed against
the cap, the GPU-hours of a managed `vllm serve` (a stand-in `vllm` command), shares of shards,
the progress line, the plan's warning and the recipe's checks."""

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from distill.config import Recipe, dump_recipe
from distill.errors import InputError
from distill.generate import run_generate
from distill.records import RunDir, read_jsonl
from distill.teacher.budget import GpuHourCap, SpendCap, prompt_token_bound
from distill.teacher.client import Job, complete_all
from distill.teacher.progress import Progress
from teacher_standin import Running, StandIn

REPO = Path(__file__).resolve().parents[1]
P_IN, P_OUT = 100.0, 1000.0   # $ per million tokens: a request of the stand-in costs ~$0.02
MAX_TOKENS = 100


def recipe(base_url: str | None, teacher: dict | None = None, **generate) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning", "family": "arith"}]},
        "teacher": {"model": "standin", "base_url": base_url, **(teacher or {})},
        "generate": {"samples_per_prompt": 2, "max_tokens": MAX_TOKENS, "max_n_per_request": 1,
                     "max_retries": 2, "backoff_s": 0.01, "price_per_m_input": P_IN,
                     "price_per_m_output": P_OUT, **generate},
        "train": {"student": "toy:student"},
        "eval": {"benchmarks": ["toy_arith"]},
    })


def write_prompts(run_dir: Path, count: int) -> None:
    stage = RunDir(run_dir).stage("prompts")
    with stage.writer() as w:
        for i in range(count):
            w.write({"id": f"p{i}", "source": "arith", "category": "reasoning", "subcategory": None,
                     "messages": [{"role": "user", "content": f"{i}+{i}="}], "verifier": "math",
                     "answer": str(2 * i), "tests": None, "entry_point": None})
    stage.complete()


def worst_usd(key: str) -> float:
    """The gate's worst case of one request of the stand-in's prompt `key` (n = 1)."""
    messages = [{"role": "user", "content": key}]
    return (prompt_token_bound(messages) * P_IN + MAX_TOKENS * P_OUT) / 1e6


def cli_generate(recipe_file: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "distill.cli", "generate", str(recipe_file), "--run-dir", str(run_dir)]
    for o in overrides:
        args += ["-o", o]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"})


def test_a_cap_reached_mid_run_exits_2_and_a_higher_cap_resumes_exactly(tmp_path):
    """30 prompts x 2 samples, one sample a request, 4 in flight, at most $0.60: the run stops
    with exit 2 and a line naming the cap; the records on disk are whole; replaying the
    stand-in's log, no request was sent that the answers so far and the worst cases of those
    in flight could push past the cap. A re-run at $5 completes: every sample once, and no
    sample was asked for twice over both runs."""
    prompts, samples, cap = 30, 2, 0.60
    app = StandIn(latency_s=0.05)
    run_dir, recipe_file = tmp_path / "run", tmp_path / "recipe.yaml"
    with Running(app) as s:
        recipe_file.write_text(dump_recipe(recipe(s.url, max_concurrency=4)))
        write_prompts(run_dir, prompts)
        done = cli_generate(recipe_file, run_dir, f"generate.max_usd={cap}")
        assert done.returncode == 2, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        m = re.fullmatch(r"error: spend cap reached: \$(\d\.\d\d) spent of generate\.max_usd = \$0\.60 "
                         r"\((\d+) of 60 samples stored; (\d+) not asked\); raise generate\.max_usd "
                         r"and re-run to resume", line)
        assert m, line
        stage = RunDir(run_dir).generate
        assert not stage.is_complete()
        recs = [r for shard in stage.shards() for r in read_jsonl(shard)]  # every line whole JSON
        stored = len(recs)
        assert 0 < stored < prompts * samples and int(m[2]) == stored and int(m[3]) == 60 - stored
        assert all(r["content"] and r["cost"] > 0 for r in recs)
        assert len({r["id"] for r in recs}) == stored
        spent = sum(r["cost"] for r in recs)
        assert spent <= cap and float(m[1]) == pytest.approx(spent, abs=0.005)
        failed = stage.read_json("failed.json")
        assert {f["kind"] for f in failed} == {"spend_cap"}
        assert sum(len(f["missing_samples"]) for f in failed) == 60 - stored
        # Every request sent was answered and stored: none was paid for and thrown away.
        st = app.stats
        assert len(st.log) == stored and set(st.outcomes) == {"ok"}
        # The log replayed: at each arrival, what was answered before it at its real cost, what
        # was still in flight at its worst, and this request's worst stay within the cap.
        real = {r["messages"][-1]["content"]: r["cost"] for r in recs}
        for i, arrived in enumerate(st.arrived):
            committed = sum(real[key] if (st.answered[j] or arrived) < arrived else worst_usd(key)
                            for j, (key, _, _) in enumerate(st.log[:i]))
            assert committed + worst_usd(st.log[i][0]) <= cap + 1e-9, i
        # The stage stopped for the cap, not for want of room: one more request would not fit.
        assert spent + worst_usd("29+29=") > cap

        first_run = len(st.log)
        done = cli_generate(recipe_file, run_dir, "generate.max_usd=5")
        assert done.returncode == 0, done.stderr
    ids = [r["id"] for shard in stage.shards() for r in read_jsonl(shard)]
    assert len(ids) == len(set(ids)) == prompts * samples
    assert stage.is_complete() and stage.manifest()["samples"] == prompts * samples
    assert not (stage.path / "failed.json").exists()
    assert len(st.log) - first_run == prompts * samples - stored
    # each request asks for one sample: two requests per prompt over both runs, never a third
    assert Counter(key for key, _, _ in st.log) == {f"{i}+{i}=": samples for i in range(prompts)}


def _body(max_tokens: int, n: int = 1) -> dict:
    return {"messages": [{"role": "user", "content": "q"}], "n": n, "max_tokens": max_tokens}


def test_the_gate_counts_requests_in_flight_waits_for_them_then_stops():
    """At $1 per completion token (prompts free), $1 spent of $10: two requests of worst case
    $4 go; a third waits until an answer frees room; a request that fits with nothing in
    flight never comes, and the cap is reached for good."""
    async def scenario() -> None:
        cap = SpendCap(10.0, 1.0, (0.0, 1e6), price=lambda usage: usage["cost"])
        assert cap.worst(_body(4)) == 4.0 and cap.worst(_body(2, n=3)) == 6.0
        a = await cap.admit(_body(4))
        b = await cap.admit(_body(4))
        assert (a, b) == (4.0, 4.0) and cap.in_flight == 2        # 1 + 4 + 4 = 9
        third = asyncio.ensure_future(cap.admit(_body(4)))         # 13 > 10: waits
        await asyncio.sleep(0.02)
        assert not third.done()
        cap.settle(a, {"cost": 0.5})                               # 1.5 + 4 + 4 = 9.5
        assert await asyncio.wait_for(third, 1) == 4.0
        fourth = asyncio.ensure_future(cap.admit(_body(4)))
        cap.settle(b, {"cost": 4.0})                               # 5.5 + 4 + 4 = 13.5: waits on
        await asyncio.sleep(0.02)
        assert not fourth.done() and cap.spent == 5.5
        cap.settle(4.0, None)                                      # no answer: nothing spent
        d = await asyncio.wait_for(fourth, 1)
        cap.settle(d, {"cost": 3.0})                               # 8.5 spent, nothing in flight
        assert await cap.admit(_body(4)) is None and cap.reached  # 12.5 > 10, nothing to wait for
        assert await cap.admit(_body(1)) is None                   # 9.5 would fit: stopped all the same
        assert cap.spent == 8.5 and cap.reserved == 0.0 and cap.in_flight == 0
        assert cap.text() == "$=8.50/10.00" and cap.refusal() == "not sent: generate.max_usd = $10.00 reached"
    asyncio.run(scenario())


def test_the_prompt_bound_is_bytes_not_characters():
    """A token of a byte-level BPE covers at least one byte: 1,000 CJK characters are 3,000
    bytes, and chars / 3 would have priced them at a third of what they may cost."""
    text = "数" * 1000
    assert prompt_token_bound([{"role": "user", "content": text}]) >= 3000
    with pytest.raises(ValueError, match="no worst case"):
        SpendCap(1.0, 0.0, (1.0, 1.0), price=lambda u: 0.0).worst({"messages": [], "n": 1})
    body = {"messages": [], "n": 2, "max_tokens": None, "max_completion_tokens": 500}
    assert SpendCap(1.0, 0.0, (0.0, 1e6), price=lambda u: 0.0).worst(body) == 1000.0


def test_retries_and_empty_answers_pass_the_gate_and_are_counted(tmp_path):
    """A 500 is retried through the gate and costs nothing; an empty answer is billed (its
    usage counts) and asked again; the jobs the cap stops come back as spend_cap failures."""
    app = StandIn(script={"a": ["500"], "b": ["empty"]})
    priced: list[dict] = []

    def price(usage: dict) -> float:
        priced.append(usage)
        return (usage["prompt_tokens"] * P_IN + usage["completion_tokens"] * P_OUT) / 1e6

    jobs = [Job(key=k, messages=[{"role": "user", "content": k}], n=1, temperature=1.0, top_p=1.0,
                max_tokens=MAX_TOKENS) for k in "abcde"]
    answered: list[str] = []
    # The stand-in's answer to a one-letter prompt: 8 prompt and 20 completion tokens, $0.0208;
    # an empty one $0.0008. After a, b (empty, then answered) and c, $0.0632 are spent, and the
    # $0.1098 worst case of d passes $0.17.
    cap = SpendCap(0.17, 0.0, (P_IN, P_OUT), price)
    with Running(app) as s:   # retries come back at once (no backoff): the order is fixed
        failures = complete_all(s.url, "standin", jobs, lambda job, resp: answered.append(job.key),
                                max_concurrency=1, backoff_s=0.0, cap=cap)
    assert [(k, outcome) for k, _, outcome in app.stats.log] == [
        ("a", "500"), ("a", "ok"), ("b", "empty"), ("b", "ok"), ("c", "ok")]
    assert answered == ["a", "b", "c"] and cap.reached
    assert [u["completion_tokens"] for u in priced] == [20, 0, 20, 20]  # the empty answer is billed
    assert cap.spent == pytest.approx(3 * 0.0208 + 0.0008) and cap.in_flight == 0
    assert [(f.job.key, f.kind, f.attempts) for f in failures] == [("d", "spend_cap", 0), ("e", "spend_cap", 0)]


def test_gpu_hours_run_on_the_clock_with_room_for_one_request_and_the_stop():
    """8 GPUs, 0.5 GPU-hours used before, a 600 s timeout and a 60 s stop: a request goes while
    0.5 + 8 x (elapsed + 660 s) / 3600 <= 2, that is until 15 s after the start; then none."""
    now = [100.0]
    cap = GpuHourCap(2.0, 0.5, gpus=8, request_s=600, stop_s=60, clock=lambda: now[0])

    def admit() -> float | None:
        return asyncio.run(cap.admit(_body(10)))

    assert admit() == 0.0 and not cap.exhausted()
    now[0] = 114.9
    assert admit() == 0.0
    now[0] = 115.1
    assert admit() is None and cap.reached
    assert cap.spent == pytest.approx(0.5 + 15.1 / 3600 * 8)
    assert cap.text() == "gpu-h=0.53/2.00"
    assert cap.refusal() == "not sent: generate.max_gpu_hours = 2.00 GPU-hours reached"


def test_the_progress_line_shows_spent_against_the_cap():
    usd = Progress(10, "generate (m)", cost_before=1.0, log_every_s=1e9,
                   cap=SpendCap(5.0, 3.2, (1.0, 1.0), price=lambda u: 0.0))
    usd.advance(1, 10, 0.5)
    assert "$=3.20/5.00 ~$15.00" in usd._line()
    gpu = Progress(10, "generate (m)", log_every_s=1e9,
                   cap=GpuHourCap(4.0, 1.2, gpus=8, request_s=60, stop_s=60))
    assert "gpu-h=1.20/4.00" in gpu._line() and "$=" not in gpu._line()
    usd.close()
    gpu.close()


def fake_vllm(tmp_path: Path, latency: float) -> Path:
    """A `vllm` command that serves the stand-in teacher (tests/teacher_standin.py) on the port
    it is given, at once: a managed `vllm serve` whose GPUs cost nothing."""
    exe = tmp_path / "vllm"
    exe.write_text(f"#!{sys.executable}\n"
                   "import sys\n"
                   f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
                   "from teacher_standin import main\n"
                   "a = sys.argv[1:]\n"
                   f"main(['--port', a[a.index('--port') + 1], '--served-name', a[1], '--latency', '{latency}'])\n")
    exe.chmod(0o755)
    return exe


def test_max_gpu_hours_stops_a_managed_vllm_serve_and_counts_every_serving(tmp_path):
    """TP 8 x DP 8 = 64 GPUs, a 1 s timeout and the 60 s stop allowance: a cap of 65.5 s of the
    64 GPUs leaves ~4.5 s to send in. The run stops mid-way with exit 2 (InputError), its GPU
    time kept in generate/serving/ within the cap; a re-run with the cap already used up starts
    no server; a higher cap resumes and completes."""
    prompts = 300                                     # ~8 s of work at 2 in flight
    exe = fake_vllm(tmp_path, latency=0.05)
    vllm = {"executable": str(exe), "tensor_parallel_size": 8, "data_parallel_size": 8,
            "startup_timeout_s": 60}
    write_prompts(tmp_path, prompts)
    per_s = 64 / 3600
    cap = 65.5 * per_s

    def cfg(max_gpu_hours: float) -> Recipe:
        return recipe(None, {"backend": "vllm_serve", "vllm": vllm}, samples_per_prompt=1,
                      max_concurrency=2, timeout_s=1.0, price_per_m_input=0.0, price_per_m_output=0.0,
                      max_gpu_hours=max_gpu_hours)

    with pytest.raises(InputError, match=r"spend cap reached: \d\.\d\d GPU-hours used of "
                       r"generate\.max_gpu_hours = 1\.16 \(\d+ of 300 samples stored; \d+ not asked\)"):
        run_generate(cfg(cap), tmp_path)
    stage = RunDir(tmp_path).generate
    stored = sum(1 for _ in stage.read())
    assert 0 < stored < prompts and not stage.is_complete()
    [session] = [stage.read_json(f"serving/{p.name}") for p in (stage.path / "serving").glob("*.json")]
    assert session["gpus"] == 64 and session["gpu_hours"] == pytest.approx(session["hours"] * 64)
    assert 0 < session["gpu_hours"] <= cap

    # The cap used up: nothing fits, no server is started (no second serving is recorded).
    used = session["gpu_hours"]
    with pytest.raises(InputError, match="generate.max_gpu_hours"):
        run_generate(cfg(used + 60 * per_s), tmp_path)
    assert len(list((stage.path / "serving").glob("*.json"))) == 1
    assert sum(1 for _ in stage.read()) == stored

    run_generate(cfg(100.0), tmp_path)
    ids = [r["id"] for r in stage.read()]
    assert len(ids) == len(set(ids)) == prompts and stage.is_complete()
    assert len(list((stage.path / "serving").glob("*.json"))) == 2


def test_shards_each_get_an_equal_share_of_what_is_left(tmp_path, monkeypatch):
    """`generate.shards: 2` with Ray replaced by running each shard's part in turn: each shard
    may spend half of what the cap left, and stops there; the line reports the whole run
    directory's spend."""
    import distill.shard as shard

    shares: list[float] = []

    def run_in_turn(cfg, run_dir, part, **kwargs):
        shares.append(kwargs["cap_share"])
        prompts = list(RunDir(run_dir).prompts.read())
        return [part(cfg, run_dir, [p for p in prompts if shard.shard_of(p["id"], 2) == i],
                     label=f" [shard {i + 1}/2]", **kwargs) for i in range(2)], []

    monkeypatch.setattr(shard, "run_sharded", run_in_turn)
    app = StandIn()
    with Running(app) as s:
        write_prompts(tmp_path, 40)
        run_generate(recipe(s.url, samples_per_prompt=1, max_usd=5.0, shards=2), tmp_path)
        before = sum(r["cost"] for r in RunDir(tmp_path).generate.read())   # 40 answers, ~$0.84
        with pytest.raises(InputError, match=r"spend cap reached: \$\d\.\d\d spent of generate.max_usd "
                           r"= \$\d\.\d\d \(\d\d of 80 samples stored; \d\d not asked\)"):
            run_generate(recipe(s.url, samples_per_prompt=2, max_usd=before + 0.5, shards=2), tmp_path)
    assert shares[0] == pytest.approx(2.5) and shares[1] == pytest.approx(0.25)
    spent = sum(r["cost"] for r in RunDir(tmp_path).generate.read())
    assert spent <= before + 0.5
    # per shard: at most its share, and no room left in it for one more request
    by_shard = Counter()
    for r in RunDir(tmp_path).generate.read():
        if r["sample_index"] == 1:
            by_shard[shard.shard_of(r["prompt_id"], 2)] += r["cost"]
    assert all(0 < v <= 0.25 for v in by_shard.values()) and len(by_shard) == 2
    assert all(v + worst_usd("19+19=") > 0.25 for v in by_shard.values())


def test_the_plan_warns_when_the_projection_passes_the_cap():
    from distill.config import load_recipe, recipe_path
    from distill.plan import make_plan
    plan = make_plan(load_recipe(recipe_path("r1-to-7b"), ["generate.max_usd=14000"]))
    usd = plan["generation"]["projected"]["api_usd"]
    assert 28_000 < usd < 29_000
    assert [w for w in plan["warnings"] if "max_usd" in w] == [
        f"the projected API cost, ${usd:,.2f}, exceeds generate.max_usd = $14,000.00: the generate "
        "stage will stop at the cap, about 49% of the way through the samples"]


@pytest.mark.parametrize("teacher, generate, key, message", [
    ({}, {"max_usd": 5, "max_gpu_hours": 2}, "generate.max_gpu_hours", "not both"),
    ({}, {"max_usd": 5, "price_per_m_input": 0, "price_per_m_output": 0}, "generate.max_usd",
     "no price is set"),
    ({}, {"max_usd": 5, "extra_body": {"max_tokens": None}}, "generate.max_usd", "bound on every answer"),
    ({}, {"max_gpu_hours": 2}, "generate.max_gpu_hours", "teacher.backend: vllm_serve"),
    ({"backend": "vllm_offline", "base_url": None}, {"max_usd": 5}, "generate.max_usd", "offline engine"),
    ({"backend": "vllm_offline", "base_url": None}, {"max_gpu_hours": 2}, "generate.max_gpu_hours",
     "offline engine"),
])
def test_the_recipe_checks_a_cap_against_what_it_can_count(tmp_path, teacher, generate, key, message):
    from distill.config import load_recipe
    path = tmp_path / "recipe.yaml"
    cfg = recipe("http://127.0.0.1:1/v1", teacher)
    path.write_text(dump_recipe(cfg))
    overrides = [f"generate.{k}={json.dumps(v)}" for k, v in generate.items()]
    overrides += [f"teacher.{k}={json.dumps(v)}" for k, v in teacher.items()]
    with pytest.raises(InputError, match=re.escape(message)) as e:
        load_recipe(path, overrides)
    assert e.value.key == key
    ok = recipe(None, {"backend": "vllm_serve"}, max_gpu_hours=2, price_per_m_input=0, price_per_m_output=0)
    assert ok.generate.max_gpu_hours == 2
