"""An OpenAI-compatible chat server for local Hugging Face causal LMs: reads a model directory
(or Hub id), answers POST /v1/chat/completions, POST /v1/completions (with vLLM's
prompt_logprobs, for server-side distillation), GET /v1/models, GET /health, GET /metrics.

    python -m distill.serving.server --model PATH --port 8000 --served-name toy:teacher

Why not `transformers serve`: it ignores `n` and `logprobs` and runs one request at a time
without batching, and distillation needs all three (n samples per prompt, the teacher's top-k
for logit distillation, throughput). vLLM does all of it on GPU; this server is the same
protocol for CPU and small models, so the pipeline has one code path.

Batching lives in `distill.serving.engine`, the request shapes and the reasoning split
(`<think>R</think>A` gives reasoning_content=R, content=A, as vLLM's parsers do) in
`distill.serving.protocol`.
"""

import argparse
import asyncio
import logging
import os
import threading
import time
import uuid
from typing import Any

from pydantic import ValidationError

from distill import logs
from distill.serving.engine import Engine
from distill.serving.protocol import ChatRequest, CompletionRequest, split_reasoning  # noqa: F401

log = logging.getLogger("distill.serving.server")


def _error(status: int, message: str, kind: str = "invalid_request_error"):
    from fastapi.responses import JSONResponse
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def create_app(engine: Engine, served_name: str):
    from fastapi import FastAPI, Request

    app = FastAPI(title="distill teacher server")

    async def _read(request: Request, model: type[ChatRequest] | type[CompletionRequest]):
        """The validated request, or the OpenAI-style error response to return instead."""
        try:
            body = await request.json()
        except Exception:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            req = model.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            return _error(400, f"{where}: {err['msg']}")
        if req.stream:
            return _error(400, "stream=true is not supported by this server")
        if req.model and req.model != served_name:
            return _error(404, f"model {req.model!r} is not served here (serving {served_name!r})",
                          "not_found_error")
        return req

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served_name, "object": "model", "owned_by": "distill",
                                             "created": 0, "max_model_len": engine.max_len}]}

    @app.get("/metrics")
    def metrics() -> dict:
        return dict(engine.metrics)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await _read(request, ChatRequest)
        if not isinstance(req, ChatRequest):
            return req  # the error response
        loop = asyncio.get_running_loop()
        try:
            work = engine.prepare(req, loop)
        except ValueError as e:
            return _error(400, str(e))
        except Exception as e:  # e.g. a chat template that rejects the roles given
            return _error(400, f"could not apply the chat template: {e}")
        engine.metrics["requests"] += 1
        engine.metrics["samples_requested"] += req.n
        start = time.time()
        engine.queue.put(work)
        try:
            choices = await work.future
        except Exception as e:
            return _error(500, f"generation failed: {e}", "server_error")
        completion = sum(c["completion_tokens"] for c in choices)
        reasoning = sum(c["reasoning_tokens"] for c in choices)
        engine.metrics["completions"] += len(choices)
        engine.metrics["prompt_tokens"] += len(work.prompt_ids)
        engine.metrics["completion_tokens"] += completion
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(start), "model": served_name,
            "choices": [{"index": i, "finish_reason": c["finish_reason"], "logprobs": c["logprobs"],
                         "message": {"role": "assistant", "content": c["content"],
                                     "reasoning_content": c["reasoning"]}}
                        for i, c in enumerate(choices)],
            "usage": {"prompt_tokens": len(work.prompt_ids), "completion_tokens": completion,
                      "total_tokens": len(work.prompt_ids) + completion,
                      "completion_tokens_details": {"reasoning_tokens": reasoning}},
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await _read(request, CompletionRequest)
        if not isinstance(req, CompletionRequest):
            return req  # the error response
        p = req.prompt
        prompts: list[Any]
        if isinstance(p, str):
            prompts = [p]
        elif p and all(isinstance(x, int) for x in p):
            prompts = [p]
        else:
            prompts = list(p)
        prompts = [engine.tok(x, add_special_tokens=False).input_ids if isinstance(x, str) else x
                   for x in prompts]
        loop = asyncio.get_running_loop()
        try:
            works = [engine.prepare_ids(ids, req, loop) for ids in prompts] if req.max_tokens else []
        except ValueError as e:
            return _error(400, str(e))
        engine.metrics["requests"] += 1
        engine.metrics["samples_requested"] += req.n * len(prompts)
        start = time.time()
        scored = None
        try:
            if req.prompt_logprobs is not None:
                scored = await asyncio.to_thread(engine.score, prompts, req.prompt_logprobs)
            for w in works:
                engine.queue.put(w)
            results = [await w.future for w in works] or [[{"text": "", "finish_reason": "length",
                                                             "completion_tokens": 0, "logprobs": None}
                                                            for _ in range(req.n)] for _ in prompts]
        except Exception as e:
            return _error(500, f"generation failed: {e}", "server_error")
        choices: list[dict[str, Any]] = []
        completion = 0
        for i, (ids, cs) in enumerate(zip(prompts, results)):
            for c in cs:
                completion += c["completion_tokens"]
                lp = c["logprobs"]
                choices.append({
                    "index": len(choices), "text": c["text"], "finish_reason": c["finish_reason"],
                    "logprobs": None if lp is None else {
                        "tokens": [t["token"] for t in lp["content"]],
                        "token_logprobs": [t["logprob"] for t in lp["content"]],
                        "top_logprobs": [{a["token"]: a["logprob"] for a in t["top_logprobs"]}
                                         for t in lp["content"]]},
                    "prompt_logprobs": None if scored is None else scored[i]})
        n_prompt = sum(len(ids) for ids in prompts)
        engine.metrics["completions"] += len(choices)
        engine.metrics["prompt_tokens"] += n_prompt
        engine.metrics["completion_tokens"] += completion
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(start),
                "model": served_name, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": completion,
                          "total_tokens": n_prompt + completion}}

    return app


def exit_with_parent(parent_pid: int) -> None:
    """If the process that started us dies (even by kill -9), exit too: no orphan servers."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(1.0)
    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model directory or Hub id")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--served-name", default=None, help="the model name clients ask for")
    p.add_argument("--revision", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: usable cores)")
    # 50 ms is nothing next to a generate call, and lets a burst of clients (or the clients
    # whose previous batch just finished) land in one batch: measured 1.5x the throughput of
    # 10 ms at concurrency 32 on the toy teacher.
    p.add_argument("--batch-wait-ms", type=float, default=50.0,
                   help="how long the worker waits for more requests before a batch starts")
    p.add_argument("--max-batch-rows", type=int, default=256)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="the longest prompt + answer accepted (default: the model's positions)")
    p.add_argument("--strict-context", action="store_true",
                   help="answer 400 to a request that does not fit, as vLLM does, instead of "
                        "shortening its max_tokens")
    args = p.parse_args(argv)

    logs.setup()
    if args.parent_pid:
        exit_with_parent(args.parent_pid)
    import torch
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    engine = Engine(args.model, args.revision, args.batch_wait_ms, args.max_batch_rows,
                    args.max_model_len, args.strict_context)
    log.info("loaded %s on %s with %d threads", args.model, engine.device, torch.get_num_threads())

    import uvicorn
    uvicorn.run(create_app(engine, args.served_name or args.model), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
