"""A stand-in OpenAI-compatible chat server with a fixed latency and injected faults, for the
client's tests and benches: it answers POST /v1/chat/completions after `latency_s` with `n`
canned choices, and serves GET /health, GET /v1/models and GET /stats (what it received and
how it answered each request).

    python tests/teacher_standin.py --port 8001 --latency 0.5 --fault-rate 0.3

Faults (`--faults`, a fraction `--fault-rate` of requests): `429` (with Retry-After), `500`,
`hang` (no answer until well past any client timeout), `drop` (the connection is cut before
an answer), `malformed` (a 200 with a torn JSON body), `empty` (a 200 whose choices have no
text, as the DeepSeek API sometimes answers) and `length` (a trace cut at max_tokens). Whether
a request fails is drawn from a hash of (seed, prompt, attempt number), so a run's faults do
not depend on the order requests arrive in.

A rate limit (`--limit-per-s R`), as an API enforces one: a request beyond R accepted in the
last second is answered 429 with the Retry-After that frees a slot, whatever its prompt.

Why a hand-written HTTP/1.1 server rather than uvicorn: cutting a connection mid-request and
sending a torn body need the socket itself, which ASGI servers hide; and a bench of client
throughput needs a server that costs next to nothing per request. It speaks just enough
HTTP/1.1 for the OpenAI clients: keep-alive, Content-Length bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

FAULTS = ("429", "500", "hang", "drop", "malformed", "empty", "length", "400", "401")
DEFAULT_FAULTS = ("429", "500", "hang", "drop", "malformed")


@dataclass
class Stats:
    """What the server saw: every request's prompt key, n and outcome, in arrival order."""
    requests: int = 0
    outcomes: Counter = field(default_factory=Counter)
    ok_per_key: Counter = field(default_factory=Counter)    # complete 200 answers per prompt
    n_per_key: Counter = field(default_factory=Counter)     # samples answered per prompt
    log: list = field(default_factory=list)                 # (key, n, outcome)
    arrived: list = field(default_factory=list)             # time.monotonic() of each, as log
    answered: list = field(default_factory=list)            # when its answer was sent (None: none)
    auth: Counter = field(default_factory=Counter)          # Authorization headers seen
    first_s: float | None = None
    last_s: float | None = None
    in_flight: int = 0
    max_in_flight: int = 0                                  # the most requests open at once

    def as_dict(self) -> dict:
        return {"requests": self.requests, "outcomes": dict(self.outcomes),
                "ok_per_key": dict(self.ok_per_key), "n_per_key": dict(self.n_per_key),
                "log": self.log, "auth": dict(self.auth), "first_s": self.first_s,
                "last_s": self.last_s, "max_in_flight": self.max_in_flight}


def _key(body: dict) -> str:
    msgs = body.get("messages") or []
    return str(msgs[-1].get("content")) if msgs else ""


class StandIn:
    def __init__(self, latency_s: float = 0.0, fault_rate: float = 0.0,
                 faults: tuple[str, ...] = DEFAULT_FAULTS, retry_after_s: float = 0.2,
                 hang_s: float = 30.0, seed: int = 0, completion_tokens: int = 20,
                 reasoning_field: bool = True, model: str = "standin",
                 script: dict[str, list[str]] | None = None, limit_per_s: float | None = None):
        unknown = (set(faults) | {f for seq in (script or {}).values() for f in seq}) - set(FAULTS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.latency_s, self.fault_rate, self.faults = latency_s, fault_rate, tuple(faults)
        self.retry_after_s, self.hang_s, self.seed = retry_after_s, hang_s, seed
        self.completion_tokens, self.reasoning_field, self.model = completion_tokens, reasoning_field, model
        self.script = script or {}
        self.stats = Stats()
        self._attempts: Counter = Counter()
        self.limit_per_s = limit_per_s
        self._accepted: deque = deque()     # when the requests of the last second were accepted

    def _over_limit(self) -> float | None:
        """Seconds until a slot frees when the rate limit is reached, else None (and the
        request takes a slot)."""
        if not self.limit_per_s:
            return None
        now = time.monotonic()
        while self._accepted and self._accepted[0] <= now - 1.0:
            self._accepted.popleft()
        if len(self._accepted) >= self.limit_per_s:
            return max(0.01, self._accepted[0] + 1.0 - now)
        self._accepted.append(now)
        return None

    def _fault(self, key: str) -> str | None:
        self._attempts[key] += 1
        if key in self.script:  # a test's fixed sequence of outcomes for this prompt
            seq = self.script[key]
            outcome = seq[self._attempts[key] - 1] if self._attempts[key] <= len(seq) else "ok"
            return None if outcome == "ok" else outcome
        if not self.fault_rate or not self.faults:
            return None
        h = hashlib.sha256(f"{self.seed}|{key}|{self._attempts[key]}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2 ** 64
        if u >= self.fault_rate:
            return None
        return self.faults[int(u / self.fault_rate * len(self.faults)) % len(self.faults)]

    def completion(self, body: dict, outcome: str) -> dict:
        key, n = _key(body), int(body.get("n") or 1)
        k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        tokens = 0 if outcome == "empty" else min(self.completion_tokens, int(body.get("max_tokens") or 1 << 30))
        choices = []
        for i in range(n):
            reasoning, answer = f"thinking about {key} ({i})", f"answer {i} to {key}"
            if outcome == "empty":
                reasoning, answer = None, ""
            elif outcome == "length":
                answer = None
            msg = {"role": "assistant"}
            if self.reasoning_field or reasoning is None:
                msg.update(content=answer or "", reasoning_content=reasoning)
            else:  # reasoning inline, as servers without a reasoning parser send it
                msg["content"] = f"<think>{reasoning}" + ("" if answer is None else f"</think>{answer}")
            choice = {"index": i, "message": msg, "logprobs": None,
                      "finish_reason": "length" if outcome == "length" else "stop"}
            if k:
                choice["logprobs"] = {"content": [
                    {"token": f"token_id:{t}", "logprob": -0.1 * (j + 1),
                     "top_logprobs": [{"token": f"token_id:{t + r}", "logprob": -0.1 * (j + 1) - r}
                                      for r in range(k)]}
                    for j, t in enumerate(range(10, 10 + tokens))]}
            choices.append(choice)
        prompt = max(1, len(json.dumps(body.get("messages"))) // 4)
        reasoning = (tokens // 2) * n
        return {"id": f"chatcmpl-{self.stats.requests}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model") or self.model,
                "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": tokens * n,
                          "total_tokens": prompt + tokens * n,
                          "completion_tokens_details": {"reasoning_tokens": reasoning}}}

    # ------------------------------------------------------------------ HTTP/1.1
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                keep = headers.get("connection", "").lower() != "close"
                self.stats.in_flight += 1
                self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
                try:
                    if not await self.route(method, path.split("?")[0], headers, body, writer):
                        return
                finally:
                    self.stats.in_flight -= 1
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _send(writer, status: int, obj=None, raw: bytes | None = None, extra: str = "") -> None:
        data = raw if raw is not None else json.dumps(obj).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  429: "Too Many Requests", 500: "Internal Server Error"}
        writer.write(f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n{extra}\r\n".encode() + data)

    async def route(self, method: str, path: str, headers: dict, raw: bytes, writer) -> bool:
        """Answers one request; False when the connection must be dropped."""
        if method == "GET":
            if path == "/health":
                self._send(writer, 200, {"status": "ok"})
            elif path == "/v1/models":
                self._send(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
            elif path == "/stats":
                self._send(writer, 200, self.stats.as_dict())
            else:
                self._send(writer, 404, {"error": {"message": f"no route {path}"}})
            await writer.drain()
            return True
        if path != "/v1/chat/completions":
            self._send(writer, 404, {"error": {"message": f"no route {path}"}})
            return True
        body = json.loads(raw)
        key, n = _key(body), int(body.get("n") or 1)
        st = self.stats
        st.requests += 1
        st.first_s = st.first_s or time.monotonic()
        st.auth[headers.get("authorization", "")] += 1
        wait = self._over_limit()
        fault = "429" if wait is not None else self._fault(key)
        outcome = fault or "ok"
        st.outcomes[outcome] += 1
        st.log.append((key, n, outcome))
        st.arrived.append(time.monotonic())
        st.answered.append(None)
        index = len(st.log) - 1
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
            return False
        await asyncio.sleep(self.latency_s)
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "429":
            self._send(writer, 429, {"error": {"message": "rate limit reached", "type": "rate_limit"}},
                       extra=f"Retry-After: {self.retry_after_s if wait is None else round(wait, 2):g}\r\n")
        elif fault in ("500", "400", "401"):
            message = {"500": "internal error", "400": "messages: bad request", "401": "invalid api key"}[fault]
            self._send(writer, int(fault), {"error": {"message": message, "type": "error"}})
        elif fault == "malformed":
            data = json.dumps(self.completion(body, "ok")).encode()
            self._send(writer, 200, raw=data[: len(data) // 2])
        else:
            self._send(writer, 200, self.completion(body, outcome))
            if outcome == "ok":
                st.ok_per_key[key] += 1
                st.n_per_key[key] += n
        await writer.drain()
        st.last_s = st.answered[index] = time.monotonic()
        return True


async def _serve(app: StandIn, host: str, port: int, started: threading.Event | None = None,
                 stop: asyncio.Event | None = None) -> None:
    server = await asyncio.start_server(app.handle, host, port, backlog=1024)
    if started:
        started.set()
    async with server:
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()


class Running:
    """A stand-in running on a thread of this process: `with Running(StandIn(...)) as s: s.url`."""

    def __init__(self, app: StandIn, port: int | None = None):
        from distill.serving.launcher import free_port
        self.app, self.port = app, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> "Running":
        started = threading.Event()

        def target() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            self._loop.run_until_complete(body())
            self._loop.close()

        async def body() -> None:
            await _serve(self.app, "127.0.0.1", self.port, started, self._stop)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:  # hung requests: end them before the loop closes
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
        self._thread = threading.Thread(target=target, daemon=True, name="standin")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the stand-in server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--faults", default=",".join(DEFAULT_FAULTS), help=f"from {','.join(FAULTS)}")
    p.add_argument("--retry-after", type=float, default=0.2)
    p.add_argument("--hang", type=float, default=30.0, help="how long a hung request hangs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--completion-tokens", type=int, default=20)
    p.add_argument("--think-tags", action="store_true", help="reasoning inline in <think> tags")
    p.add_argument("--served-name", default="standin")
    p.add_argument("--limit-per-s", type=float, default=None, help="429 past this many requests a second")
    args = p.parse_args(argv)
    app = StandIn(args.latency, args.fault_rate, tuple(f for f in args.faults.split(",") if f),
                  args.retry_after, args.hang, args.seed, args.completion_tokens,
                  not args.think_tags, args.served_name, limit_per_s=args.limit_per_s)
    print(f"stand-in on http://{args.host}:{args.port}/v1 (pid {os.getpid()})", flush=True)
    asyncio.run(_serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
