"""Client-side limits for a rate-limited teacher API: requests and tokens per minute, backoff
with jitter that honours `Retry-After`, and which errors are worth another try.

Why not aiolimiter: a tokens-per-minute limit must charge a request before it is sent (its
prompt plus an estimate of its answer) and correct the charge when the real usage comes back
(a reasoning trace is anywhere from 1k to 32k tokens); aiolimiter's buckets take a fixed amount
up front, capped at the bucket size. `Pace` is the generic cell rate algorithm in a dozen lines,
with that correction.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

# Worth another try: the server was busy or the answer was lost on the way.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Every further request would fail the same way (a bad key, no credit, a wrong model name):
# stop the run instead of spending the whole prompt set on it.
ABORT_STATUS = frozenset({401, 402, 403, 404})


@dataclass
class RequestError(Exception):
    """A failed attempt. `kind` is a short label for counts ("http_429", "timeout",
    "connection", "malformed", "empty", "http_400"); `retryable` says whether to try again."""
    reason: str
    kind: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    abort: bool = False
    usage: dict | None = None    # an answer that came back unusable (empty) is still billed

    def __str__(self) -> str:
        return self.reason


def http_error(status: int, detail: str, retry_after: str | None) -> RequestError:
    retryable = status in RETRYABLE_STATUS or status >= 500
    return RequestError(f"HTTP {status}: {detail}", f"http_{status}", retryable, status,
                        parse_retry_after(retry_after) if retryable else None,
                        abort=status in ABORT_STATUS)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry number `attempt + 1`: exponential with full jitter, at most `cap`.
    A server's Retry-After is a floor (never retry sooner than asked), with up to 10% jitter on
    top so that the requests told to wait do not all come back in the same instant."""
    if retry_after is not None:
        return retry_after * (1 + random.uniform(0, 0.1))
    return random.uniform(0, min(cap, base * 2 ** attempt))


class Pace:
    """At most `per_minute` units per minute, spread evenly (with a one-second burst). Units
    are requests or tokens. `acquire(n)` waits until `n` units may go; `adjust(d)` charges
    `d` more (or fewer, if negative) once the true amount is known."""

    def __init__(self, per_minute: float, burst_s: float = 1.0):
        self.rate = per_minute / 60.0
        self.burst_s = burst_s
        self._tat = time.monotonic()  # theoretical arrival time of the next unit

    async def acquire(self, amount: float = 1.0) -> None:
        while True:
            now = time.monotonic()
            self._tat = max(self._tat, now)
            wait = self._tat - self.burst_s - now
            if wait <= 0:
                self._tat += amount / self.rate
                return
            await asyncio.sleep(wait)

    def adjust(self, amount: float) -> None:
        self._tat += amount / self.rate


class Limits:
    """The optional per-minute paces of one run, and the token estimate they charge."""

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None):
        self.requests = Pace(requests_per_minute) if requests_per_minute else None
        self.tokens = Pace(tokens_per_minute) if tokens_per_minute else None
        self._completion_mean: float | None = None
        self._seen = 0
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Holds every request not yet sent for `seconds` (a 429 says the account, not one
        request, is over its limit: the others would only collect 429s of their own)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def estimate(self, prompt_chars: int, n: int, max_tokens: int) -> float:
        """Tokens a request will use, before it is sent: ~4 characters a token for the prompt,
        and for the answer the mean seen so far (max_tokens until the first answer)."""
        per_choice = max_tokens if self._completion_mean is None else min(max_tokens, self._completion_mean)
        return prompt_chars / 4 + n * per_choice

    async def admit(self, estimate: float) -> None:
        while (wait := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if self.requests:
            await self.requests.acquire(1)
        if self.tokens:
            await self.tokens.acquire(estimate)

    def settle(self, estimate: float, used: float | None, n: int = 1, completion: float | None = None) -> None:
        """Replaces a request's estimate by what it used (None: it failed; its estimate stays
        charged, as the provider counts failed requests too)."""
        if completion is not None and n:
            self._seen += 1
            mean = self._completion_mean or 0.0
            self._completion_mean = mean + (completion / n - mean) / self._seen
        if self.tokens and used is not None:
            self.tokens.adjust(used - estimate)
