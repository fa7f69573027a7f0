"""What a refresh costs next to a run from scratch: prompts-stage time and teacher requests.

Builds a JSONL prompt source of N rows and a local OpenAI-compatible stand-in teacher (a
fixed answer, every request counted), then runs the real prompts and generate stages:

  1. the first run: N prompts, N requests;
  2. a refresh with nothing new: the source's revision (its content hash) is unchanged, so
     the prompts stage does not read it, and the teacher is not asked at all;
  3. a refresh after 1% more rows: only the new rows become prompts and requests;
  4. the same 101% of rows from scratch, which is what a one-shot script (the peers' way)
     does on every update unless its cache happens to cover the old rows.

    PYTHONPATH=. .venv/bin/python bench/refresh.py [--rows 5000]

Prints one table and the ratios. Times are wall-clock on a shared machine: read the ratios.
"""


import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path


def _teacher():
    """A stand-in teacher on a free port; returns (base_url, request counter)."""
    import uvicorn
    from fastapi import FastAPI, Request

    app, count = FastAPI(), {"requests": 0}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        count["requests"] += 1
        choice = {"index": 0, "finish_reason": "stop",
                  "message": {"role": "assistant", "content": "\\boxed{2}",
                              "reasoning_content": "1 + 1 = 2"}}
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{**choice, "index": i} for i in range(body.get("n", 1))],
                "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", count


def _write_rows(path: Path, start: int, n: int, mode: str = "w") -> None:
    with open(path, mode) as f:
        for i in range(start, start + n):
            f.write(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()

    from distill.config import load_recipe
    from distill.generate import run_generate
    from distill.config import recipe_path
    from distill.prompts import run_prompts

    base_url, count = _teacher()
    work = Path(tempfile.mkdtemp(prefix="distill-bench-refresh-"))
    source = work / "prompts.jsonl"
    _write_rows(source, 0, args.rows)
    cfg = load_recipe(recipe_path("smoke"), [
        f"prompts.sources=[{{name: rows, kind: jsonl, path: {source}, category: reasoning}}]",
        f"teacher.base_url={base_url}", "teacher.model=stand-in", "generate.max_concurrency=64"])

    results = []

    def step(name: str, run_dir: Path) -> None:
        t0 = time.perf_counter()
        run_prompts(cfg, run_dir)
        prompts_s = time.perf_counter() - t0
        before = count["requests"]
        t1 = time.perf_counter()
        run_generate(cfg, run_dir)
        results.append((name, prompts_s, time.perf_counter() - t1, count["requests"] - before))

    run_dir = work / "run"
    step(f"first run ({args.rows} rows)", run_dir)
    step("refresh, nothing new", run_dir)
    extra = max(1, args.rows // 100)
    _write_rows(source, args.rows, extra, mode="a")
    step(f"refresh, +{extra} rows", run_dir)
    step(f"from scratch, {args.rows + extra} rows", work / "scratch")

    shutil.rmtree(work, ignore_errors=True)
    print(f"{'step':<32} {'prompts s':>10} {'generate s':>11} {'teacher requests':>17}")
    for name, p, g, n in results:
        print(f"{name:<32} {p:>10.3f} {g:>11.2f} {n:>17}")
    first, same, grown, scratch = results
    print(f"\nunchanged refresh, prompts stage: {same[1] / first[1]:.3f}x the first read; "
          f"teacher requests {same[3]}")
    print(f"refresh after +1% rows: {grown[3] / scratch[3]:.4f}x the requests of a run from "
          f"scratch ({grown[3]} vs {scratch[3]}), {(grown[1] + grown[2]) / (scratch[1] + scratch[2]):.3f}x "
          "its prompts + generate time")


if __name__ == "__main__":
    main()
