"""Spend caps of one teacher run, checked before each request is sent: `SpendCap` in dollars
(an API teacher, at the recipe's per-million prices) and `GpuHourCap` in GPU-hours (a
`vllm serve` that distill started). The client asks `admit(body)` before every attempt,
retries included, and `settle(...)` when the attempt ends; once `admit` refuses, the cap is
`reached` and the run sends nothing more.

Dollars. A request is sent only when spent + the worst case of every request in flight + its
own worst case stays within the cap, so that even if every one of them came back as long as
allowed the cap would hold. A request's worst case is

    prompt bound x the input price + n x its answer bound x the dearer of output and reasoning

The prompt bound is the UTF-8 bytes of its messages as JSON plus TEMPLATE_TOKENS: a token of a
byte-level BPE (GPT, Llama 3, Qwen, DeepSeek) covers at least one byte, and the JSON's keys,
quotes and braces (~30 bytes a message) outnumber the role tokens a chat template adds. It is
~4x the true count for English, which costs little: the answer bound dominates (a 2,000-byte
prompt is $0.001 at $0.55/M; 4 x 32,768 tokens at $2.19/M is $0.29). The answer bound is what
the request itself asks for: `max_completion_tokens`, else `max_tokens` (a server that lets
reasoning run past it, as DeepSeek's first reasoner API did, defeats the bound). A request
that does not fit waits for those in flight (their real cost is usually far below their worst
case) and is checked again; when nothing is in flight and it still does not fit, the cap is
reached.

Spent is what the caller had spent before (the run directory's records) plus the usage of
every answered request, priced by the caller's `price(usage)`: answers that are not stored
(empty ones) included, as they are billed. A request that got no answer (an error status, a
timeout, a dropped connection) counts nothing: no usage comes back, and providers bill what
they answer. A provider that finishes and bills a request the client gave up on is paid
beyond what is counted here.

GPU-hours. Spent is what earlier servings used plus this serving's wall time since it started
(loading the model included) x the GPUs it holds. The GPUs are paid by the hour, busy or idle,
so waiting buys nothing: a request is sent only when the GPU-hours at now + `request_s` (the
client's timeout: the longest a request sent now keeps the server up) + `stop_s` (stopping
the server) stay within the cap, and the first that does not fit ends the sending.
"""

from __future__ import annotations

import asyncio
import json
from time import monotonic
from typing import Callable

# Tokens a chat template may add to a request beyond its messages (a default system prompt,
# the generation prompt): part of the prompt bound.
TEMPLATE_TOKENS = 64


def prompt_token_bound(messages: list[dict]) -> int:
    """An upper bound on a request's prompt tokens: see the module docstring."""
    return len(json.dumps(messages, ensure_ascii=False).encode()) + TEMPLATE_TOKENS


def answer_bound(body: dict) -> int:
    """The most completion tokens one choice of this request may take."""
    bound = body.get("max_completion_tokens") or body.get("max_tokens")
    if not bound:
        raise ValueError("a request without max_tokens or max_completion_tokens has no worst case")
    return int(bound)


class _Cap:
    key: str        # the recipe key that sets it
    unit: str       # as the progress line shows it
    cap: float
    reached: bool

    @property
    def spent(self) -> float:
        raise NotImplementedError

    def amount(self, x: float) -> str:
        raise NotImplementedError

    def refusal(self) -> str:
        """Why a request was not sent."""
        return f"not sent: {self.key} = {self.amount(self.cap)} reached"

    def text(self) -> str:
        """Spent against the cap, for the progress line."""
        return f"{self.unit}={self.spent:.2f}/{self.cap:.2f}"


class SpendCap(_Cap):
    """At most `cap` dollars, `spent` of them already; `prices` are $ per million prompt and
    completion tokens of the worst case (the dearest of each), `price(usage)` the real cost of
    an answered request's usage."""
    key = "generate.max_usd"
    unit = "$"

    def __init__(self, cap: float, spent: float, prices: tuple[float, float],
                 price: Callable[[dict], float]):
        self.cap, self._spent = cap, spent
        self.p_prompt, self.p_answer = prices
        self.price = price
        self.reserved = 0.0      # the worst cases of the requests in flight
        self.in_flight = 0
        self.reached = False
        self._settled: asyncio.Event | None = None

    @property
    def spent(self) -> float:
        return self._spent

    def worst(self, body: dict) -> float:
        return (prompt_token_bound(body["messages"]) * self.p_prompt
                + int(body.get("n") or 1) * answer_bound(body) * self.p_answer) / 1e6

    def fits(self, worst: float) -> bool:
        return self.spent + self.reserved + worst <= self.cap * (1 + 1e-12)

    def exhausted(self) -> bool:
        return self.spent >= self.cap

    async def admit(self, body: dict) -> float | None:
        """The reservation to hand to `settle`, once the request fits; None when the cap is
        reached (nothing in flight and it still does not fit, or another request found so)."""
        worst = self.worst(body)
        while not self.reached:
            if self.fits(worst):
                self.reserved += worst
                self.in_flight += 1
                return worst
            if not self.in_flight:
                self.reached = True
                break
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()
        return None

    def settle(self, reserved: float, usage: dict | None) -> None:
        """An admitted request ended: answered with `usage`, or with no answer (None)."""
        self.reserved -= reserved
        self.in_flight -= 1
        if usage:
            self._spent += self.price(usage)
        if self._settled is not None:   # wake every waiter; the next ones wait on a fresh event
            self._settled.set()
            self._settled = None

    def amount(self, x: float) -> str:
        return f"${x:,.2f}"


class GpuHourCap(_Cap):
    """At most `cap` GPU-hours, `before` of them used by earlier servings; this serving holds
    `gpus` GPUs from now on (the clock starts at construction)."""
    key = "generate.max_gpu_hours"
    unit = "gpu-h"

    def __init__(self, cap: float, before: float, gpus: int, request_s: float, stop_s: float,
                 clock: Callable[[], float] | None = None):
        self.cap, self.before, self.gpus = cap, before, gpus
        self.request_s, self.stop_s = request_s, stop_s
        self.clock = clock or monotonic
        self.started = self.clock()
        self.reached = False

    @property
    def hours(self) -> float:
        """Wall-clock hours of this serving so far."""
        return (self.clock() - self.started) / 3600

    @property
    def spent(self) -> float:
        return self.before + self.hours * self.gpus

    def exhausted(self) -> bool:
        """No request sent now could finish, and the server stop, within the cap."""
        return self.spent + (self.request_s + self.stop_s) / 3600 * self.gpus > self.cap * (1 + 1e-12)

    async def admit(self, body: dict) -> float | None:
        if not self.reached and self.exhausted():
            self.reached = True
        return None if self.reached else 0.0

    def settle(self, reserved: float, usage: dict | None) -> None:
        pass  # the clock counts, not the answers

    def amount(self, x: float) -> str:
        return f"{x:,.2f} GPU-hours"


Cap = SpendCap | GpuHourCap
