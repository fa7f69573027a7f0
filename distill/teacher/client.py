"""An async client for OpenAI-compatible chat servers: sends `Job`s, returns `Response`s through a
callback as each finishes, and hands back the jobs that failed after the last retry.

It speaks HTTP with httpx rather than through the `openai` package: reasoning arrives in
non-standard fields (`reasoning_content` from vLLM/DeepSeek, `reasoning` from others) that are
plainest in the raw JSON, and the retry policy (which errors, how long to wait, when to give up
and report instead of raising) is the stage's, not a second layer of retries inside the SDK.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import httpx

THINK, END_THINK = "<think>", "</think>"
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


@dataclass
class Job:
    key: str
    messages: list[dict]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    top_logprobs: int = 0


@dataclass
class Choice:
    content: str
    reasoning: str | None
    finish_reason: str
    logprobs: list | None


@dataclass
class Response:
    choices: list[Choice]
    usage: dict
    latency_s: float


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(Exception):
    pass


def parse_choice(raw: dict) -> Choice:
    """Reasoning from `reasoning_content`, else `reasoning`, else split from `<think>` tags."""
    msg = raw.get("message") or {}
    content = msg.get("content") or ""
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning is None:
        if END_THINK in content:
            reasoning, content = content.split(END_THINK, 1)
            reasoning = reasoning.split(THINK, 1)[1] if THINK in reasoning else reasoning
        elif content.startswith(THINK):  # cut off before the think block closed
            reasoning, content = content[len(THINK):], ""
    logprobs = (raw.get("logprobs") or {}).get("content")
    return Choice(content=content, reasoning=reasoning, finish_reason=raw.get("finish_reason") or "",
                  logprobs=logprobs)


def _backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, at most a minute; a server's Retry-After wins."""
    if retry_after is not None:
        return min(retry_after, 60.0)
    return random.uniform(0, min(60.0, base * 2 ** attempt))


async def _request(client: httpx.AsyncClient, url: str, model: str, job: Job) -> Response:
    body = {"model": model, "messages": job.messages, "n": job.n, "temperature": job.temperature,
            "top_p": job.top_p, "max_tokens": job.max_tokens}
    if job.top_logprobs:
        # vLLM's extension (honoured by distill's server too): tokens as "token_id:N", so the
        # stored logprobs map to vocabulary ids exactly, whatever the tokenizer's byte encoding.
        body.update(logprobs=True, top_logprobs=job.top_logprobs, return_tokens_as_token_ids=True)
    start = time.monotonic()
    try:
        r = await client.post(url, json=body)
    except httpx.TransportError as e:  # connection refused/reset, timeouts
        raise _Retryable(f"{type(e).__name__}: {e}") from None
    if r.status_code != 200:
        try:
            detail = r.json()["error"]["message"]
        except Exception:
            detail = r.text[:300]
        reason = f"HTTP {r.status_code}: {detail}"
        if r.status_code in RETRYABLE_STATUS or r.status_code >= 500:
            after = r.headers.get("retry-after")
            raise _Retryable(reason, float(after) if after and after.replace(".", "", 1).isdigit() else None)
        raise _Fatal(reason)
    try:
        data = r.json()
        choices = [parse_choice(c) for c in sorted(data["choices"], key=lambda c: c.get("index", 0))]
    except Exception as e:  # a torn or malformed body: a proxy hiccup, worth another try
        raise _Retryable(f"malformed response: {e}") from None
    return Response(choices=choices, usage=data.get("usage") or {}, latency_s=time.monotonic() - start)


async def _complete_all(base_url, model, jobs, on_done, api_key, max_concurrency, max_retries,
                        timeout_s, desc, backoff_s) -> list[tuple[Job, str]]:
    from tqdm.auto import tqdm

    jobs = list(jobs)
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
    failures: list[tuple[Job, str]] = []
    sem = asyncio.Semaphore(max_concurrency)
    tokens = 0
    started = time.monotonic()
    bar = tqdm(total=len(jobs), desc=desc, unit="req")

    async def run(client: httpx.AsyncClient, job: Job) -> None:
        nonlocal tokens
        async with sem:
            for attempt in range(max_retries + 1):
                try:
                    resp = await _request(client, url, model, job)
                    break
                except _Fatal as e:
                    failures.append((job, str(e)))
                    bar.update(1)
                    return
                except _Retryable as e:
                    if attempt == max_retries:
                        failures.append((job, f"{e} (after {max_retries + 1} attempts)"))
                        bar.update(1)
                        return
                    await asyncio.sleep(_backoff(attempt, backoff_s, e.retry_after))
        on_done(job, resp)
        tokens += int(resp.usage.get("completion_tokens") or 0)
        elapsed = max(time.monotonic() - started, 1e-9)
        bar.set_postfix(tokens=tokens, tok_s=f"{tokens / elapsed:.0f}", failed=len(failures), refresh=False)
        bar.update(1)

    try:
        async with httpx.AsyncClient(headers=headers, limits=limits,
                                     timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))) as client:
            tasks = [asyncio.ensure_future(run(client, job)) for job in jobs]
            try:
                # The first exception (from on_done: a full disk, a bug) stops the run.
                for fut in asyncio.as_completed(tasks):
                    await fut
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        bar.close()
    return failures


def complete_all(base_url: str, model: str, jobs: Iterable[Job], on_done: Callable[[Job, Response], None],
                 *, api_key: str | None = None, max_concurrency: int = 64, max_retries: int = 5,
                 timeout_s: float = 600, desc: str = "generate",
                 backoff_s: float = 1.0) -> list[tuple[Job, str]]:
    """Runs every job with at most `max_concurrency` in flight and returns [(job, reason)] for
    those that still failed after `max_retries` retries. Connection errors, timeouts, 408/409,
    429 and 5xx are retried with exponential backoff (base `backoff_s`); other 4xx fail at once.
    `on_done(job, response)` runs on the event loop as each job finishes; if it raises, the run
    stops and the exception propagates."""
    args = (base_url, model, jobs, on_done, api_key, max_concurrency, max_retries, timeout_s, desc, backoff_s)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_complete_all(*args))
    # Called from inside a running loop (a notebook, an async flow): run on a thread of our own.
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(_complete_all(*args))
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
