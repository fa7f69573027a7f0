"""An async client for OpenAI-compatible chat servers: sends `Job`s, returns `Response`s through a
callback as each finishes, and hands back the jobs that failed after the last retry.

It speaks HTTP with aiohttp rather than through the `openai` package: reasoning arrives in
non-standard fields (`reasoning_content` from vLLM/DeepSeek, `reasoning` from others) that are
plainest in the raw JSON, and the retry policy (which errors, how long to wait, when to give up
and report instead of raising) is the stage's, not a second layer of retries inside the SDK.
aiohttp rather than httpx: its C HTTP parser costs a fraction of h11's per request, and with
64 requests answered at once the client's time per answer delays every next request (measured
against the stand-in at L = 1 s, 64 in flight: 0.98 of the C/L bound with aiohttp, 0.93 with
httpx, whose shared pool is besides quadratic in the number of connections).

`max_concurrency` workers pull jobs from one queue, so a million jobs cost a million small
objects, not a million tasks. A failed attempt goes back on a queue of retries with its
backoff and frees its worker meanwhile; requests-per-minute and tokens-per-minute paces
(`distill.teacher.limits`) gate every attempt. With a spend cap (`distill.teacher.budget`) each
attempt is admitted by the cap first; once the cap refuses one, nothing more is sent, the
requests in flight finish, and the jobs not sent come back as failures of kind `spend_cap`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import aiohttp

from distill.teacher.budget import Cap
from distill.teacher.limits import Limits, RequestError, backoff, http_error
from distill.teacher.progress import Progress
from distill.serving.protocol import split_reasoning


@dataclass
class Job:
    key: str
    messages: list[dict]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    top_logprobs: int = 0
    extra_body: dict = field(default_factory=dict)  # merged last; a None value drops the field


@dataclass
class Choice:
    content: str
    reasoning: str | None
    finish_reason: str
    logprobs: list | None

    @property
    def empty(self) -> bool:
        """No text at all although the model says it stopped: a lost answer, not a short one."""
        return not self.content and not self.reasoning and self.finish_reason != "length"


@dataclass
class Response:
    choices: list[Choice]
    usage: dict
    latency_s: float
    attempts: int = 1


class Failure(NamedTuple):
    job: Job | None        # None: no one request failed (a prompt given up after empty answers)
    reason: str
    kind: str              # e.g. http_429, timeout, connection, malformed, empty, http_400, not_sent,
                           # spend_cap (not sent: the spend cap was reached)
    attempts: int
    retryable: bool


def parse_choice(raw: dict) -> Choice:
    """Reasoning from `reasoning_content`, else `reasoning`, else split from `<think>` tags."""
    msg = raw.get("message") or {}
    content = msg.get("content") or ""
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning is None:  # the server has no reasoning parser: split as vLLM's would
        reasoning, content = split_reasoning(content)
    logprobs = (raw.get("logprobs") or {}).get("content")
    return Choice(content=content, reasoning=reasoning, finish_reason=raw.get("finish_reason") or "",
                  logprobs=logprobs)


def request_body(model: str, job: Job) -> dict:
    body = {"model": model, "messages": job.messages, "n": job.n, "temperature": job.temperature,
            "top_p": job.top_p, "max_tokens": job.max_tokens}
    if job.top_logprobs:
        # vLLM's extension (honoured by distill's server too): tokens as "token_id:N", so the
        # stored logprobs map to vocabulary ids exactly, whatever the tokenizer's byte encoding.
        body.update(logprobs=True, top_logprobs=job.top_logprobs, return_tokens_as_token_ids=True)
    body.update(job.extra_body)
    return {k: v for k, v in body.items() if v is not None}


async def _request(session: aiohttp.ClientSession, url: str, body: dict) -> Response:
    start = time.monotonic()
    try:
        async with session.post(url, json=body) as r:
            raw = await r.read()
            status, retry_after = r.status, r.headers.get("retry-after")
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
        raise RequestError(f"timeout ({type(e).__name__})", "timeout", True) from None
    except aiohttp.ClientPayloadError as e:  # the body was cut off on the way
        raise RequestError(f"malformed response: {type(e).__name__}: {e}", "malformed", True) from None
    except (aiohttp.ClientError, OSError) as e:  # refused, reset, dropped before the answer
        raise RequestError(f"{type(e).__name__}: {e}", "connection", True) from None
    if status != 200:
        try:
            detail = json.loads(raw)["error"]["message"]
        except Exception:
            detail = raw[:300].decode(errors="replace")
        raise http_error(status, detail, retry_after)
    try:
        data = json.loads(raw)
    except ValueError as e:  # a torn body: a proxy hiccup, worth another try
        raise RequestError(f"malformed response: {e}", "malformed", True) from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("code"), int):  # an error inside a 200
            raise http_error(err["code"], str(err.get("message")), None)
        raise RequestError(f"malformed response: no choices in {json.dumps(data)[:200]}", "malformed", True)
    try:
        choices = [parse_choice(c) for c in sorted(data["choices"], key=lambda c: c.get("index", 0))]
    except (AttributeError, TypeError) as e:
        raise RequestError(f"malformed response: {e}", "malformed", True) from None
    if not choices or all(c.empty for c in choices):
        raise RequestError("empty response: no content and no reasoning", "empty", True,
                           usage=data.get("usage") or None)
    return Response(choices=choices, usage=data.get("usage") or {}, latency_s=time.monotonic() - start)


class _Queue:
    """Fresh jobs in order, and retries that become ready after their backoff."""

    def __init__(self, jobs: Iterable[Job]):
        self.fresh = iter(jobs)
        self.retries: list = []   # heap of (ready_at, seq, job, attempt)
        self.busy = 0             # taken and not yet finished or re-queued
        self.exhausted = False
        self._seq = itertools.count()

    def retry(self, job: Job, attempt: int, delay: float) -> None:
        heapq.heappush(self.retries, (time.monotonic() + delay, next(self._seq), job, attempt))

    async def take(self) -> tuple[Job, int] | None:
        while True:
            now = time.monotonic()
            if self.retries and self.retries[0][0] <= now:
                _, _, job, attempt = heapq.heappop(self.retries)
                self.busy += 1
                return job, attempt
            if not self.exhausted:
                job = next(self.fresh, None)
                if job is not None:
                    self.busy += 1
                    return job, 0
                self.exhausted = True
            if not self.retries and not self.busy:
                return None
            wait = self.retries[0][0] - now if self.retries else 0.05
            await asyncio.sleep(min(max(wait, 0.001), 0.05))

    def drain(self) -> list[Job]:
        """Everything not yet sent (after an abort)."""
        left = [job for _, _, job, _ in self.retries] + list(self.fresh)
        self.retries.clear()
        self.exhausted = True
        return left


async def _complete_all(base_url, model, jobs, on_done, api_key, max_concurrency, paces, max_retries,
                        timeout_s, desc, backoff_s, max_backoff_s, progress, cap) -> list[Failure]:
    jobs = list(jobs)
    url = base_url.rstrip("/") + "/chat/completions"
    limits = Limits(*paces)
    own_progress = progress is None
    if own_progress:
        progress = Progress(len(jobs), desc, unit="req")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    failures: list[Failure] = []
    queue = _Queue(jobs)
    abort: list[RequestError] = []
    refusal = cap.refusal() if cap is not None else ""

    async def attempt(session: aiohttp.ClientSession, job: Job, n_attempt: int) -> None:
        body = request_body(model, job)
        held = 0.0
        if cap is not None:
            reservation = await cap.admit(body)
            if reservation is None:
                failures.append(Failure(job, refusal, "spend_cap", n_attempt, True))
                return
            held = reservation
        estimate = limits.estimate(len(json.dumps(job.messages)), job.n, job.max_tokens) if limits.tokens else 0.0
        await limits.admit(estimate)
        progress.attempt()
        try:
            resp = await asyncio.wait_for(_request(session, url, body), timeout_s)
        except asyncio.TimeoutError:
            err = RequestError(f"timeout after {timeout_s:g} s", "timeout", True)
        except RequestError as e:
            err = e
        else:
            usage = resp.usage
            if cap is not None:
                cap.settle(held, usage)
            limits.settle(estimate, float(usage.get("total_tokens") or 0) or None, job.n,
                          float(usage.get("completion_tokens") or 0))
            resp.attempts = n_attempt + 1
            on_done(job, resp)
            if own_progress:
                progress.advance(1, int(usage.get("completion_tokens") or 0))
            return
        if cap is not None:
            cap.settle(held, err.usage)
        limits.settle(estimate, None)
        progress.error(err.kind)
        if err.abort:
            abort.append(err)
            failures.append(Failure(job, str(err), err.kind, n_attempt + 1, False))
        elif not err.retryable or n_attempt >= max_retries:
            tail = f" (after {n_attempt + 1} attempts)" if err.retryable else ""
            failures.append(Failure(job, f"{err}{tail}", err.kind, n_attempt + 1, err.retryable))
        else:
            delay = backoff(n_attempt, backoff_s, max_backoff_s, err.retry_after)
            if err.status == 429 and err.retry_after is not None:
                limits.pause(err.retry_after)      # the server said when the account may send
            queue.retry(job, n_attempt + 1, delay)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not abort and not (cap and cap.reached) and (item := await queue.take()) is not None:
            try:
                await attempt(session, *item)
            finally:
                queue.busy -= 1

    connector = aiohttp.TCPConnector(limit=max_concurrency, limit_per_host=max_concurrency,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 30.0))
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
            tasks = [asyncio.ensure_future(worker(session)) for _ in range(min(max_concurrency, len(jobs)) or 1)]
            try:
                # The first exception (from on_done: a full disk, a bug) stops the run.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    if (exc := t.exception()) is not None:
                        raise exc
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if own_progress:
            progress.close()
    if abort:
        why = f"not sent: the run stopped after {abort[0]}"
        failures += [Failure(j, why, "not_sent", 0, False) for j in queue.drain()]
    elif cap is not None and cap.reached:
        failures += [Failure(j, refusal, "spend_cap", 0, True) for j in queue.drain()]
    return failures


def complete_all(base_url: str, model: str, jobs: Iterable[Job], on_done: Callable[[Job, Response], None],
                 *, api_key: str | None = None, max_concurrency: int = 64, max_retries: int = 5,
                 timeout_s: float = 600, desc: str = "generate", backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, progress: Progress | None = None,
                 cap: Cap | None = None) -> list[Failure]:
    """Runs every job with at most `max_concurrency` requests in flight (and at most
    `requests_per_minute` / `tokens_per_minute`), and returns a `Failure` for each job that
    still failed after `max_retries` retries. Timeouts (`timeout_s` per request, in total),
    dropped connections, torn bodies, empty answers, 408/409/429 and 5xx are retried with
    backoff (Retry-After, else exponential from `backoff_s` with full jitter); other 4xx fail at
    once, and 401/402/403/404 stop the run (every other request would fail the same way).

    `on_done(job, response)` runs on the event loop as each job finishes; if it raises, the run
    stops and the exception propagates. With a `progress`, the caller advances it in on_done;
    without, the client shows its own bar of requests.

    With a `cap` (`distill.teacher.budget`), every attempt is admitted by it before it is sent
    and settled when it ends; after the cap refuses one, the jobs not sent come back as
    `spend_cap` failures."""
    args = (base_url, model, jobs, on_done, api_key, max_concurrency,
            (requests_per_minute, tokens_per_minute), max_retries, timeout_s, desc,
            backoff_s, max_backoff_s, progress, cap)
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
