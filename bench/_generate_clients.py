"""One client of bench/generate_throughput.py and bench/generate_faults.py: sends N prompts to an
OpenAI-compatible URL with at most C requests in flight, the way each tool is normally used,
and prints one JSON line: {"client", "wall_s", "completed", "failed"}. Runs in the client's own
environment (distill: the project's venv; curator, distilabel: their bench venvs).

    python bench/_generate_clients.py distill|curator|distilabel --url URL --n N --c C --workdir DIR
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def prompts(n: int) -> list[str]:
    return [f"What is {i} + {i}?" for i in range(n)]


def run_distill(a) -> tuple[float, int, int]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from distill.config import Recipe
    from distill.generate import run_generate
    from distill.records import RunDir
    run_dir = Path(a.workdir) / "distill"
    stage = RunDir(run_dir).stage("prompts")
    with stage.writer() as w:
        for i, text in enumerate(prompts(a.n)):
            w.write({"id": f"p{i}", "messages": [{"role": "user", "content": text}]})
    stage.complete()
    cfg = Recipe.model_validate({
        "run": {"name": "bench"},
        "prompts": {"sources": [{"name": "x", "kind": "jsonl", "category": "reasoning", "path": "-"}]},
        "teacher": {"model": "standin", "base_url": a.url},
        "generate": {"samples_per_prompt": 1, "max_tokens": 64, "max_concurrency": a.c,
                     "timeout_s": a.timeout, "max_retries": a.retries, "backoff_s": 0.05, "max_backoff_s": 1.0},
        "train": {"student": "x"}, "eval": {"benchmarks": ["x"]}})
    t0 = time.perf_counter()
    try:
        run_generate(cfg, run_dir)
    except RuntimeError as e:
        print(f"distill: {e}", file=sys.stderr)
    wall = time.perf_counter() - t0
    recs = list(RunDir(run_dir).stage("generate").read())
    return wall, len(recs), a.n - len(recs)


def run_curator(a) -> tuple[float, int, int]:
    os.environ.setdefault("CURATOR_CACHE_DIR", str(Path(a.workdir) / "curator-cache"))
    os.environ["CURATOR_DISABLE_RICH_DISPLAY"] = "1"
    os.environ["TELEMETRY_ENABLED"] = "false"  # no network here
    # curator counts tokens with tiktoken, which downloads its encoding; litellm ships a copy.
    import litellm
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers"))
    from bespokelabs import curator
    llm = curator.LLM(model_name="gpt-4o-mini", backend="openai",
                      generation_params={"max_tokens": 64, "temperature": 0.6},
                      backend_params={"base_url": a.url, "api_key": "bench",
                                      "max_concurrent_requests": a.c,
                                      "max_requests_per_minute": 10_000_000,
                                      "max_tokens_per_minute": 1_000_000_000,
                                      "max_retries": a.retries, "request_timeout": max(1, int(a.timeout)),
                                      "require_all_responses": False,
                                      "seconds_to_pause_on_rate_limit": 1})
    t0 = time.perf_counter()
    out = llm(prompts(a.n))
    wall = time.perf_counter() - t0
    ds = getattr(out, "dataset", out)
    rows = [r for r in ds if r.get("response")]
    return wall, len(rows), a.n - len(rows)


def run_distilabel(a) -> tuple[float, int, int]:
    os.environ.setdefault("DISTILABEL_CACHE_DIR", str(Path(a.workdir) / "distilabel-cache"))
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration
    with Pipeline(name="bench", cache_dir=os.environ["DISTILABEL_CACHE_DIR"]) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in prompts(a.n)], batch_size=a.c)
        gen = TextGeneration(llm=OpenAILLM(model="standin", base_url=a.url, api_key="bench",
                                           max_retries=a.retries, timeout=max(1, int(a.timeout)),
                                           generation_kwargs={"max_new_tokens": 64, "temperature": 0.6}),
                             input_batch_size=a.c)
        load >> gen
    t0 = time.perf_counter()
    ds = pipeline.run(use_cache=False)
    wall = time.perf_counter() - t0
    rows = [r for r in ds["default"]["train"] if r.get("generation")]
    return wall, len(rows), a.n - len(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("client", choices=["distill", "curator", "distilabel"])
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--c", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--workdir", required=True)
    a = p.parse_args()
    cpu0 = time.process_time()
    wall, completed, failed = {"distill": run_distill, "curator": run_curator,
                               "distilabel": run_distilabel}[a.client](a)
    # CPU of this process only (distilabel's step processes are not counted).
    print(json.dumps({"client": a.client, "wall_s": wall, "completed": completed, "failed": failed,
                      "cpu_s": time.process_time() - cpu0}))


if __name__ == "__main__":
    main()
