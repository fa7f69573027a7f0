"""How long `distill view` takes to show the first page of a large run.

Fabricates a run directory of N teacher traces in the real record shapes (generate/ through the
stage's own writer, filter/ verdicts, eval/ records for four roles and comparisons.json), then
times, in one process:

  - cold: server start (the index built from every record and written to view/index.json)
    plus the first JSON page of traces fetched over HTTP;
  - warm: the same with the cached index (a second `distill view` of an unchanged run);
  - a filtered page (rejected code traces) and a flipped-questions page on the warm server;
  - first page rendered: headless Chromium loading the page until its script has drawn the
    table (when chromium is installed; includes Chromium's own start).

    PYTHONPATH=. .venv/bin/python bench/view_load.py [--traces 100000] [--chars 1500]

Times are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from distill.records import RunDir, write_json
from distill.view.server import make_server

ROLES = ("teacher", "base", "student", "student-q4_k_m")


def fabricate(path: Path, traces: int, chars: int, questions: int = 500) -> None:
    rng = random.Random(0)
    rd = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "recipe.yaml").write_text("run: {name: view-bench}\n")
    words = "carry the one then add the tens so the sum is".split()
    with rd.generate.writer(index=("prompt_id", "gen_hash", "cost", "finish_reason")) as w, \
            rd.filter.writer() as v:
        for i in range(traces):
            code = i % 3 == 0
            reasoning = " ".join(rng.choice(words) for _ in range(chars // 4))
            finish = "length" if i % 97 == 0 else "stop"
            w.write({"id": f"{i:016x}", "source": "toy_code" if code else "toy_arith", "shape": "s",
                     "category": "coding" if code else "reasoning", "subcategory": None,
                     "messages": [{"role": "user", "content": f"Question {i}: what is {i}+{i}?"}],
                     "verifier": "code" if code else "math", "answer": None if code else str(2 * i),
                     "tests": "assert f(1) == 2" if code else None, "entry_point": "f" if code else None,
                     "source_revision": "r", "prompt_id": f"p{i:015x}", "sample_index": 0,
                     "gen_hash": "g", "reasoning": reasoning,
                     "content": "```python\ndef f(x):\n    return 2 * x\n```" if code
                     else f"The answer is \\boxed{{{2 * i}}}.", "finish_reason": finish,
                     "usage": {"prompt_tokens": 30, "completion_tokens": chars // 4,
                               "reasoning_tokens": chars // 5, "cached_prompt_tokens": 0, "choices": 1},
                     "latency_s": 1.0, "attempts": 1, "cost": 0.0001, "teacher": "bench:teacher"})
            failed = "truncated" if finish == "length" else "verify" if rng.random() < 0.15 else None
            v.write({"id": f"{i:016x}", "prompt_id": f"p{i:015x}", "kept": failed is None, "failed": failed,
                     "reasons": {"truncated": "ok" if failed != "truncated" else "finish_reason length",
                                 "verify": "AssertionError" if failed == "verify" and code
                                 else "wrong answer: got 3, want 4" if failed == "verify" else "ok"}})
    tasks = [f"bench/q{k}" for k in range(questions)]
    with rd.eval.writer() as w:
        for task in tasks:
            for role in ROLES:
                w.write({"id": f"{role}-{task}", "role": role, "model": role, "benchmark": "bench",
                         "version": "1", "task_id": task, "categories": {}, "sample": 0,
                         "correct": rng.random() < 0.6, "reason": "ok", "answer": "1",
                         "content": "The answer is 1.", "reasoning": "thinking", "finish_reason": "stop",
                         "sampling_hash": "h", "max_tokens": 512, "retried_attempts": 0, "grade_retries": 0})
    write_json(path / "eval" / "comparisons.json", [
        {"benchmark": "bench", "category": "all", "metric": "pass@1", "a": "student", "b": "teacher",
         "difference": 0.0, "ci_low": -0.1, "ci_high": 0.1, "n": questions,
         "gained": tasks[::7], "lost": tasks[3::11], "p_value": 1.0}])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def _start_and_first_page(run: Path) -> tuple[float, float, object, str]:
    t0 = time.perf_counter()
    server = make_server([run], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.perf_counter() - t0
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    page = _get(base + "api/run/0/traces")
    assert len(page["rows"]) == 50
    return started, time.perf_counter() - t0, server, base


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _rendered(base: str) -> float | None:
    exe = shutil.which("chromium")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        t0 = time.perf_counter()
        out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                              "--dump-dom", base], capture_output=True, text=True, timeout=300).stdout
        assert 'data-ready="1"' in out
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=100_000)
    ap.add_argument("--chars", type=int, default=1500, help="reasoning characters per trace")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        fabricate(run, args.traces, args.chars)
        made = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
        cold_start, cold, server, _ = _start_and_first_page(run)
        server.shutdown()
        server.server_close()
        warm_start, warm, server, base = _start_and_first_page(run)
        filtered = _timed(lambda: _get(base + "api/run/0/traces?source=toy_code&status=rejected"))
        flips = _timed(lambda: _get(base + "api/run/0/flips?benchmark=bench"))
        rendered = _rendered(base)
        server.shutdown()
        index_mb = (run / "view" / "index.json").stat().st_size / 2**20
        print(f"run: {args.traces:,} traces, {size / 2**20:.0f} MiB of records (fabricated in {made:.1f} s); "
              f"index {index_mb:.1f} MiB")
        print("| step | seconds |\n|---|---|")
        print(f"| cold: server start (index built) | {cold_start:.2f} |")
        print(f"| cold: start to first JSON page | {cold:.2f} |")
        print(f"| warm: server start (cached index) | {warm_start:.2f} |")
        print(f"| warm: start to first JSON page | {warm:.2f} |")
        print(f"| filtered page (rejected code traces) | {filtered:.3f} |")
        print(f"| flipped questions page | {flips:.3f} |")
        if rendered is not None:
            print(f"| first page rendered in headless Chromium (incl. its start) | {rendered:.2f} |")
        print(f"cold/warm start to first page: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
