"""The progress line of a generation run (tqdm): samples done of those wanted, ETA, requests/s,
tokens/s, errors, cost so far and the projected cost of the whole set, e.g.

    generate (deepseek-reasoner):  41%|████   | 4100/10000 [12:01<17:18, 5.68 sample/s]
        req/s=5.7 tok/s=41.2k err=37 (http_429 30, timeout 7) $=18.42 ~$44.93

The projection is (cost so far, this run and earlier ones) / samples done x samples wanted.
With a spend cap (`distill.teacher.budget`), what counts against it is shown against the cap:
`$=3.20/5.00` (generate.max_usd) or `gpu-h=1.20/4.00` (generate.max_gpu_hours).
Where stderr is not a terminal (a log file, a Prefect worker, CI), the same line is logged
(INFO, on this module's logger) every `log_every_s` seconds (DISTILL_PROGRESS_EVERY_S, default
30) and at the end instead of a bar redrawn in place; `distill --quiet` shows neither.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from distill import logs
from distill.teacher.budget import Cap

log = logging.getLogger(__name__)


def _si(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


class Progress:
    def __init__(self, total: int, desc: str, *, initial: int = 0, cost_before: float = 0.0,
                 unit: str = "sample", log_every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, cap: Cap | None = None):
        from tqdm.auto import tqdm
        self.total, self.initial, self.desc, self.unit = total, initial, desc, unit
        self.done = initial
        self.sent = 0              # attempts sent (this run), answered or not
        self.requests = 0          # answered requests (this run)
        self.tokens = 0            # completion tokens (this run)
        self.cost = 0.0            # this run
        self.cost_before = cost_before
        self.errors: Counter = Counter()
        self.cap = cap
        self.clock = clock
        self.started = clock()
        self.tty = logs.terminal() and not logs.quiet()
        self.log_every_s = logs.progress_every_s() if log_every_s is None else log_every_s
        self._logged = self.started
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not self.tty,
                         dynamic_ncols=True, smoothing=0.05)

    def advance(self, samples: int, tokens: int = 0, cost: float = 0.0) -> None:
        """One answered request: `samples` stored, `tokens` completion tokens, `cost` dollars."""
        self.requests += 1
        self.done += samples
        self.tokens += tokens
        self.cost += cost
        self._bar.update(samples)
        self._postfix()

    def attempt(self) -> None:
        """A request is about to be sent."""
        self.sent += 1

    def error(self, kind: str) -> None:
        """A failed attempt (retried or not)."""
        self.errors[kind] += 1
        self._postfix()

    def projected_cost(self) -> float | None:
        spent = self.cost_before + self.cost
        return spent / self.done * self.total if self.done else None

    def _postfix(self) -> None:
        if not self.tty:
            now = self.clock()
            if now - self._logged >= self.log_every_s:
                self._logged = now
                self._log()
            return
        self._bar.set_postfix_str(self._stats(), refresh=False)

    def _line(self) -> str:
        """The whole progress line: done of total, elapsed, ETA and the statistics."""
        elapsed = self.clock() - self.started
        rate = (self.done - self.initial) / max(elapsed, 1e-9)
        eta = (self.total - self.done) / rate if rate else float("inf")
        eta_s = "?" if eta == float("inf") else f"{eta / 60:.1f} min" if eta >= 60 else f"{eta:.0f} s"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}s ({elapsed:.0f} s, "
                f"ETA {eta_s}) {self._stats()}")

    def _log(self) -> None:
        log.info("%s", self._line())

    def _stats(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        parts = [f"req/s={self.requests / elapsed:.1f}", f"tok/s={_si(self.tokens / elapsed)}"]
        n_err = sum(self.errors.values())
        top = ", ".join(f"{k} {v}" for k, v in self.errors.most_common(3))
        parts.append(f"err={n_err}" + (f" ({top})" if n_err else ""))
        spent, projected = self.cost_before + self.cost, self.projected_cost()
        guess = f" ~${projected:.2f}" if projected is not None else ""
        if self.cap is not None and self.cap.unit == "$":
            parts.append(self.cap.text() + guess)
        elif spent or projected:
            parts.append(f"$={spent:.2f}{guess}")
        if self.cap is not None and self.cap.unit != "$":
            parts.append(self.cap.text())
        return " ".join(parts)

    def summary(self) -> dict:
        elapsed = self.clock() - self.started
        return {"elapsed_s": round(elapsed, 2), "sent_requests": self.sent,
                "answered_requests": self.requests,
                "requests_per_s": round(self.requests / max(elapsed, 1e-9), 2),
                "completion_tokens_per_s": round(self.tokens / max(elapsed, 1e-9), 1),
                "errors": dict(self.errors)}

    def close(self) -> None:
        if self.tty:
            self._bar.set_postfix_str(self._stats(), refresh=True)
        else:
            self._log()
        self._bar.close()
