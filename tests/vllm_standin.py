"""A stand-in for the `vllm` command (vLLM needs a GPU and cannot be installed here): it takes
`vllm serve MODEL --port P --served-model-name NAME [flags]`, writes its arguments as JSON to
$VLLM_STANDIN_ARGV, and serves MODEL with distill's own OpenAI-compatible server in a child
process, as vLLM runs its engine in one. SIGTERM stops the child, then itself.

Like vLLM it has a context length: `--max-model-len`, else the model's max_position_embeddings
(what vLLM derives from config.json). It listens on the port itself and counts each chat
request's prompt through the model's chat template with its tokenizer, as vLLM does; a request
whose prompt plus max_tokens does not fit is refused with vLLM's 400 and message, the others
go on to the engine. One JSON line per chat request (model, prompt_tokens, max_tokens,
max_model_len, status) is appended to $VLLM_STANDIN_ARGV.requests.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refusal(prompt: int, max_tokens: int | None, limit: int) -> str | None:
    """vLLM's message when a request does not fit in its context, else None."""
    if prompt >= limit:
        return (f"This model's maximum context length is {limit} tokens. However, your request "
                f"has {prompt} input tokens. Please reduce the length of the input messages.")
    if max_tokens is not None and prompt + max_tokens > limit:
        return (f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
                f"model's maximum context length is {limit} tokens and your request has "
                f"{prompt} input tokens ({max_tokens} > {limit} - {prompt}).")
    return None


def main() -> None:
    args = sys.argv[1:]
    assert args[0] == "serve", args
    model = args[1]

    def flag(name: str, default=None):
        return args[args.index(name) + 1] if name in args else default

    record = os.environ["VLLM_STANDIN_ARGV"]
    with open(record, "w") as f:
        json.dump(args, f)
    engine_port = _free_port()
    child = subprocess.Popen([sys.executable, "-m", "distill.serving.server", "--model", model,
                              "--port", str(engine_port),
                              "--served-name", flag("--served-model-name")])
    with open(record + ".child", "w") as f:
        f.write(str(child.pid))
    print(f"INFO vllm stand-in: serving {model} (engine pid {child.pid})", flush=True)

    import aiohttp
    from aiohttp import web
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    with open(os.path.join(model, "config.json")) as f:
        positions = json.load(f)["max_position_embeddings"]
    limit = int(flag("--max-model-len", positions))
    engine = f"http://127.0.0.1:{engine_port}"
    print(f"INFO vllm stand-in: max_model_len {limit}", flush=True)

    async def health(request):
        try:
            async with request.app["session"].get(engine + "/health") as r:
                return web.Response(status=r.status)
        except aiohttp.ClientError:
            return web.Response(status=503)

    async def chat(request):
        body = await request.json()
        text = tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        prompt = len(tok(text, add_special_tokens=False)["input_ids"])
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        refused = _refusal(prompt, max_tokens, limit)
        with open(record + ".requests", "a") as f:
            f.write(json.dumps({"model": body.get("model"), "prompt_tokens": prompt,
                                "max_tokens": max_tokens, "max_model_len": limit,
                                "status": 400 if refused else 200}) + "\n")
        if refused:
            return web.json_response({"error": {"message": refused, "type": "BadRequestError",
                                                "param": None, "code": 400}}, status=400)
        async with request.app["session"].post(engine + "/v1/chat/completions", json=body) as r:
            return web.Response(status=r.status, body=await r.read(),
                                content_type="application/json")

    async def start(app):
        app["session"] = aiohttp.ClientSession()

    async def stop(app):
        await app["session"].close()
        print("INFO vllm stand-in: shutting down", flush=True)
        child.terminate()
        code = await asyncio.to_thread(child.wait)
        print(f"INFO vllm stand-in: engine exited with {code}", flush=True)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    # run_app stops on SIGTERM (GracefulExit) and runs `stop`, which ends the engine first.
    web.run_app(app, host=flag("--host", "127.0.0.1"), port=int(flag("--port")), print=None,
                handle_signals=True)


if __name__ == "__main__":
    main()
