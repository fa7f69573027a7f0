"""The generate stage against real servers: resumes after kill -9 without resending finished
samples, reports failures without marking the stage complete, and works through
`transformers serve`."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from distill.config import Recipe
from distill.generate import run_generate
from distill.records import RunDir, read_jsonl, record_id
from distill.teacher.local import free_port

REPO = Path(__file__).resolve().parents[1]


def recipe(model: str, base_url: str | None, **generate) -> Recipe:
    return Recipe.model_validate({
        "run": {"name": "t"},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "category": "reasoning", "family": "arith"}]},
        "teacher": {"model": model, "base_url": base_url},
        "generate": {"samples_per_prompt": 2, "temperature": 1.0, "max_tokens": 8, "max_retries": 1,
                     "price_per_m_input": 1.0, "price_per_m_output": 2.0, **generate},
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


def test_records_fields_and_manifest(tmp_path, server):
    base_url, name = server
    cfg = recipe(name, base_url, top_logprobs=2)
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
    assert r["cost"] > 0 and r["usage"]["completion_tokens"] > 0
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


def test_kill_9_then_resume_sends_only_missing(tmp_path, server):
    prompts, samples = 40, 2
    base_url, name = server
    cfg = recipe(name, base_url, max_tokens=24, max_concurrency=4)
    RunDir(tmp_path).save_recipe(cfg)
    write_prompts(tmp_path, prompts)
    code = ("from distill.config import load_recipe; from distill.generate import run_generate; "
            f"run_generate(load_recipe({str(tmp_path / 'recipe.yaml')!r}), {str(tmp_path)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stage = RunDir(tmp_path).stage("generate")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        lines = sum(p.read_text().count("\n") for p in stage.shards())
        if lines >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the first run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2.0)  # let requests already sent reach the server's counters
    assert not stage.is_complete()
    first = list(stage.read())
    assert 10 <= len(first) < prompts * samples
    per_prompt = Counter(r["prompt_id"] for r in first)
    missing_prompts = sum(1 for i in range(prompts) if per_prompt[f"p{i}"] < samples)
    missing_samples = prompts * samples - len(first)
    before = metrics(base_url)

    run_generate(cfg, tmp_path)
    after = metrics(base_url)

    recs = list(stage.read())
    ids = [r["id"] for shard in stage.shards() for r in read_jsonl(shard)]
    assert len(recs) == prompts * samples and len(ids) == len(set(ids)) == prompts * samples
    assert stage.is_complete() and stage.manifest()["samples"] == prompts * samples
    # The second run asked only for what was missing: one request per unfinished prompt,
    # n = its missing samples.
    assert after["requests"] - before["requests"] == missing_prompts
    assert after["samples_requested"] - before["samples_requested"] == missing_samples


def test_failures_are_reported_and_stage_stays_incomplete(tmp_path):
    write_prompts(tmp_path, 2)
    cfg = recipe("remote", f"http://127.0.0.1:{free_port()}/v1", max_retries=0)  # nobody listens
    with pytest.raises(RuntimeError, match="2 of 2 prompts"):
        run_generate(cfg, tmp_path)
    stage = RunDir(tmp_path).stage("generate")
    assert not stage.is_complete()
    failed = stage.read_json("failed.json")
    assert {f["prompt_id"] for f in failed} == {"p0", "p1"}
    assert all("Connect" in f["reason"] and f["missing_samples"] == [0, 1] for f in failed)


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
