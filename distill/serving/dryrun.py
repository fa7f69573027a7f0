"""A dry-run teacher: an OpenAI-compatible endpoint that answers like a reasoning model without
being one. It reads an answer key (JSONL) and the teacher's real tokenizer, and answers POST
/v1/chat/completions in the dialect of the endpoint a recipe names:

- `vllm`: `vllm serve ... --reasoning-parser deepseek_r1|qwen3`: honours `n`, the reasoning in
  `reasoning_content`, usage with prompt and completion tokens, logprobs on request (vLLM's
  `return_tokens_as_token_ids`);
- `deepseek`: DeepSeek's API (`deepseek-reasoner`): one choice whatever `n` asks, the reasoning
  in `reasoning_content`, usage with `completion_tokens_details.reasoning_tokens` and the
  context cache (`prompt_cache_hit_tokens` / `_miss_tokens`, in 64-token units, for a prompt
  seen before), a bearer key checked against the environment variable named at start (401).

    distill dryrun-teacher --dialect deepseek --tokenizer deepseek-ai/DeepSeek-R1 \\
        --answers key.jsonl --model deepseek-reasoner --api-key-env DRYRUN_KEY --port 8000

Each sample's outcome is drawn from a hash of the prompt and the sample's number for that
prompt (its reasoning shortened to fit the request's max_tokens where it can), with the shares
of `--mix`: `right` (the answer key's answer: a \\boxed{} value, a
program in a ```python block, or the letter of the right option), `wrong`, `truncated`
(reasoning that runs to max_tokens: finish_reason "length"), `unbalanced` (a stray </think> in
the answer, as R1 sometimes writes) and `no_answer` (reasoning, then no final answer). Token
counts come from the real tokenizer: the prompt through its chat template, the completion as
text. A prompt with no entry in the key gets a plausible, wrong answer. GET /metrics says how
many samples of each outcome it wrote, so a test can hold a pipeline's counts against them.

Users point other tools at it to rehearse a pipeline without paying for a teacher; it is not
the fault-injecting stand-in the client's tests use (tests/teacher_standin.py).

Answer key lines: {"match": text found verbatim in the last user message, "kind": "math" |
"code" | "choice", "answer": the gold answer | a correct program | the right option's text}.
The longest `match` contained in the prompt wins.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time.
import argparse
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill import logs
from distill.jsonl import numbered_rows

log = logging.getLogger("distill.serving.dryrun")  # __main__ when run with -m

OUTCOMES = ("right", "wrong", "truncated", "unbalanced", "no_answer")
DEFAULT_MIX = {"right": 0.6, "wrong": 0.15, "truncated": 0.1, "unbalanced": 0.1, "no_answer": 0.05}
CACHE_UNIT = 64   # DeepSeek's context cache counts hits in units of 64 tokens

# Sentences a reasoning trace is built from: a sample picks its own subset and order, so two
# samples of one prompt differ as much as two real samples do (near-duplicate detection must
# not see them as copies).
_THOUGHTS = [
    "Let me restate what is being asked before doing anything.",
    "First I write down the quantities the problem gives.",
    "I should check whether there is a simpler equivalent formulation.",
    "A small example might show the pattern.",
    "Consider the boundary case where everything is zero.",
    "Wait, I need to double-check the previous step.",
    "The constraint limits which values are possible.",
    "Breaking it into two cases keeps the bookkeeping clean.",
    "Counting directly seems error-prone, so I look for structure.",
    "Substituting back confirms the intermediate result.",
    "Hmm, the sign matters here; let me be careful.",
    "An invariant would make this argument short.",
    "I can verify this by estimating the order of magnitude.",
    "Symmetry lets me handle only half of the cases.",
    "Let me recompute that product digit by digit.",
    "The units work out, which is reassuring.",
    "Suppose the opposite holds and look for a contradiction.",
    "A table of the first few values helps.",
    "This reduces to a standard identity.",
    "Every step so far is reversible, so nothing was lost.",
    "For the code I think about the empty input first.",
    "Iterating once over the input is enough here.",
    "A dictionary keeps the lookups constant time.",
    "I trace the loop by hand on the sample input.",
    "Off-by-one errors are the usual trap at the end of the range.",
    "Recursion would work, but a loop avoids the depth limit.",
    "Sorting first makes the comparison straightforward.",
    "The examples agree with this reading of the statement.",
    "Let me make sure the return type is what the tests expect.",
    "Edge cases: a single element, duplicates, negative numbers.",
]
_FILLER = ("Let me reconsider the problem from the beginning once more, carefully, checking each "
           "assumption in turn and writing out every intermediate quantity explicitly. ")


def _h(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12], 16)


def parse_mix(text: str | None) -> dict[str, float]:
    """`right=0.6,wrong=0.2,...` -> shares that add up to 1 (unnamed outcomes get 0)."""
    if not text:
        return dict(DEFAULT_MIX)
    mix = {o: 0.0 for o in OUTCOMES}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in OUTCOMES:
            raise ValueError(f"unknown outcome {name.strip()!r} in --mix (known: {', '.join(OUTCOMES)})")
        mix[name.strip()] = float(value)
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("--mix shares add up to 0")
    return {k: v / total for k, v in mix.items()}


class AnswerKey:
    """Finds the key entry whose `match` text is the longest one contained in a prompt."""

    def __init__(self, entries: list[dict]):
        self.entries = sorted((e for e in entries if e.get("match")), key=lambda e: -len(e["match"]))
        # Exact lookup first (a prompt is usually the key text plus a template around it):
        # index by the first 80 characters, scan only the entries sharing them.
        self.by_head: dict[str, list[dict]] = defaultdict(list)
        for e in self.entries:
            self.by_head[e["match"][:80]].append(e)

    @classmethod
    def load(cls, path: str | Path | None) -> "AnswerKey":
        if not path:
            return cls([])
        return cls([entry for _, entry in numbered_rows(path)])

    def find(self, prompt: str) -> dict | None:
        for e in self.entries:
            if e["match"] in prompt:
                return e
        return None


def _wrong_math(answer: str) -> str:
    try:
        return str(int(answer.strip()) + 1)
    except ValueError:
        return "0" if answer.strip() != "0" else "1"


_OPTION = re.compile(r"^\(?([A-J])[).:]\s*(.+?)\s*$", re.M)


def _letters(prompt: str) -> dict[str, str]:
    """Option letter -> option text, from lines such as `A) 42` or `(B) x`."""
    return {m.group(1): m.group(2) for m in _OPTION.finditer(prompt)}


class DryRun:
    """The answers, the token counts, the dialect's response shapes and the counters."""

    def __init__(self, tokenizer, key: AnswerKey, dialect: str = "vllm",
                 mix: dict[str, float] | None = None, served_name: str = "dryrun",
                 tokens_per_s: float = 0.0):
        if dialect not in ("vllm", "deepseek"):
            raise ValueError(f"unknown dialect {dialect!r} (vllm or deepseek)")
        self.tok, self.key, self.dialect = tokenizer, key, dialect
        self.mix = mix or dict(DEFAULT_MIX)
        self.served_name = served_name
        self.tokens_per_s = tokens_per_s
        self.lock = threading.Lock()
        self.samples_per_prompt: Counter = Counter()   # the next sample number of a prompt
        self.seen_prompts: set[str] = set()            # DeepSeek's context cache
        self.metrics: Counter[str] = Counter()
        self._filler_ids = tokenizer(_FILLER * 64, add_special_tokens=False)["input_ids"]

    # -- text
    def _outcome(self, prompt: str, sample: int) -> str:
        x = (_h("outcome", prompt, sample) % 10_000) / 10_000
        acc = 0.0
        for name in OUTCOMES:
            acc += self.mix.get(name, 0.0)
            if x < acc:
                return name
        return "right"

    def _reasoning(self, prompt: str, sample: int, entry: dict | None, room: int = 1 << 30) -> str:
        """5-12 thoughts, fewer when `room` (tokens left for reasoning) is short: a reasoning
        model's trace fits its budget more often than not; the `truncated` share of the mix
        is what runs past it."""
        r = _h("reasoning", prompt, sample)
        count = max(1, min(5 + r % 8, room // 18 - 1))
        order = sorted(range(len(_THOUGHTS)), key=lambda i: _h(r, i))[:count]
        lines = [_THOUGHTS[i] for i in order]
        lines.insert(0, f"Sample {sample}: reading the problem ({len(prompt)} characters).")
        if entry and entry["kind"] == "math":
            lines.append(f"Putting it together, the value comes out as {entry['answer']}.")
        return "\n".join(lines)

    def _answer(self, outcome: str, prompt: str, entry: dict | None) -> str:
        kind = entry["kind"] if entry else ("code" if "```python" in prompt or "def " in prompt
                                            else "choice" if _letters(prompt) else "math")
        if outcome == "no_answer":
            return "I have worked through the problem above."
        right = outcome != "wrong" and entry is not None
        if kind == "code":
            code = entry["answer"] if right and entry else "def solution(*args):\n    return None\n"
            return f"Here is the program.\n\n```python\n{code.rstrip()}\n```"
        if kind == "choice":
            options = _letters(prompt)
            want = entry["answer"].strip() if entry else ""
            letter = next((k for k, v in options.items() if v.strip() == want), None)
            if not right or letter is None:
                letter = next((k for k in sorted(options) if k != letter), "A")
            return f"The reasoning above settles it.\n\nAnswer: {letter}"
        value = entry["answer"] if right and entry else _wrong_math(entry["answer"] if entry else "41")
        return f"Therefore the final answer is $\\boxed{{{value}}}$."

    def sample(self, prompt: str, sample: int, max_tokens: int) -> dict:
        """One choice: reasoning, content, finish_reason and its token counts."""
        entry = self.key.find(prompt)
        outcome = self._outcome(prompt, sample)
        count = lambda s: len(self.tok(s, add_special_tokens=False)["input_ids"]) if s else 0  # noqa: E731
        if outcome != "truncated":
            content = self._answer(outcome, prompt, entry)
            if outcome == "unbalanced":
                content = "Let me double-check once more.\n</think>\n" + content
            n_content = count(content) + 1                                   # EOS
            reasoning = self._reasoning(prompt, sample, entry, max_tokens - n_content)
            n_reason = count(reasoning) + 1                                  # </think>
            finish = "stop"
            if n_reason + n_content > max_tokens:     # the cap cuts a real answer too
                outcome = "truncated"
        if outcome == "truncated":    # reasoning that runs to the cap, no answer
            ids = (self._filler_ids * (max_tokens // len(self._filler_ids) + 1))[:max_tokens]
            reasoning, content, finish = self.tok.decode(ids), "", "length"
            n_reason, n_content = max_tokens, 0
        return {"reasoning": reasoning, "content": content, "finish_reason": finish,
                "reasoning_tokens": n_reason, "completion_tokens": n_reason + n_content,
                "outcome": outcome, "kind": entry["kind"] if entry else None}

    def prompt_tokens(self, messages: list[dict]) -> int:
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template writes the special tokens (a BOS) itself.
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def _logprobs(self, text: str, k: int, seed: int) -> dict:
        """vLLM's logprobs with token ids ("token_id:N"): the sampled token first, then k-1
        other ids of the vocabulary, with logprobs that fall off."""
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        vocab = len(self.tok)
        content = []
        for i, t in enumerate(ids):
            others = [(_h(seed, i, j) % vocab) for j in range(max(0, k - 1))]
            tops = [t] + [o for o in others if o != t][: max(0, k - 1)]
            content.append({"token": f"token_id:{t}", "logprob": -0.05,
                            "top_logprobs": [{"token": f"token_id:{x}", "logprob": -0.05 - 2.0 * j}
                                             for j, x in enumerate(tops)]})
        return {"content": content}

    # -- requests
    def complete(self, body: dict) -> dict:
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages: at least one message is required")
        prompt = next((m.get("content") or "" for m in reversed(messages)
                       if isinstance(m, dict) and m.get("role") == "user"), "")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 4096
        n = 1 if self.dialect == "deepseek" else int(body.get("n") or 1)
        with self.lock:
            first = self.samples_per_prompt[prompt]
            self.samples_per_prompt[prompt] += n
            cached = prompt in self.seen_prompts
            self.seen_prompts.add(prompt)
        n_prompt = self.prompt_tokens(messages)
        choices, completion, reasoning = [], 0, 0
        for i in range(n):
            s = self.sample(prompt, first + i, int(max_tokens))
            completion += s["completion_tokens"]
            reasoning += s["reasoning_tokens"]
            message = {"role": "assistant", "content": s["content"] or None,
                       "reasoning_content": s["reasoning"]}
            choice = {"index": i, "message": message, "finish_reason": s["finish_reason"],
                      "logprobs": None}
            if body.get("logprobs") and self.dialect == "vllm":
                text = s["reasoning"] if s["finish_reason"] == "length" \
                    else s["reasoning"] + "</think>" + (s["content"] or "")
                choice["logprobs"] = self._logprobs(text, int(body.get("top_logprobs") or 1), first + i)
            choices.append(choice)
            with self.lock:
                self.metrics[f"outcome_{s['outcome']}"] += 1
                self.metrics["samples"] += 1
        with self.lock:
            self.metrics["requests"] += 1
            self.metrics["prompt_tokens"] += n_prompt
            self.metrics["completion_tokens"] += completion
        if self.tokens_per_s > 0:          # a teacher's decoding speed, for pilots and benches
            time.sleep(completion / self.tokens_per_s)
        usage: dict[str, Any] = {"prompt_tokens": n_prompt, "completion_tokens": completion,
                 "total_tokens": n_prompt + completion}
        if self.dialect == "deepseek":
            hit = (n_prompt // CACHE_UNIT) * CACHE_UNIT if cached else 0
            usage.update(prompt_cache_hit_tokens=hit, prompt_cache_miss_tokens=n_prompt - hit,
                         prompt_tokens_details={"cached_tokens": hit},
                         completion_tokens_details={"reasoning_tokens": reasoning})
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
                "created": int(time.time()), "model": self.served_name, "choices": choices,
                "usage": usage}


def create_app(dry: DryRun, api_key: str | None = None):
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="distill dry-run teacher")

    def error(status: int, message: str, kind: str):
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                            status_code=status)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": dry.served_name, "object": "model",
                                             "owned_by": "distill-dryrun"}]}

    @app.get("/metrics")
    def metrics() -> dict:
        return dict(dry.metrics)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "Authentication Fails (no such user)", "authentication_error")
        try:
            body = await request.json()
        except Exception:
            return error(400, "the request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object", "invalid_request_error")
        if body.get("model") not in (None, dry.served_name):
            return error(404, f"model {body.get('model')!r} is not served here "
                         f"(serving {dry.served_name!r})", "not_found_error")
        try:
            return await asyncio.to_thread(dry.complete, body)
        except ValueError as e:
            return error(400, str(e), "invalid_request_error")

    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="the teacher's tokenizer: a folder or Hub id")
    p.add_argument("--answers", default=None, help="answer key (JSONL)")
    p.add_argument("--dialect", default="vllm", choices=["vllm", "deepseek"])
    p.add_argument("--model", default="dryrun", help="the model name clients ask for")
    p.add_argument("--mix", default=None, help="outcome shares, e.g. right=0.6,wrong=0.2,truncated=0.2")
    p.add_argument("--api-key-env", default=None, help="demand this environment variable's key")
    p.add_argument("--tokens-per-s", type=float, default=0.0, help="decoding speed to imitate")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    args = p.parse_args(argv)
    logs.setup()

    from transformers import AutoTokenizer

    if args.parent_pid:
        from distill.serving.server import exit_with_parent
        exit_with_parent(args.parent_pid)
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise SystemExit(f"--api-key-env {args.api_key_env}: the variable is not set")
    dry = DryRun(AutoTokenizer.from_pretrained(args.tokenizer), AnswerKey.load(args.answers),
                 args.dialect, parse_mix(args.mix), args.model, args.tokens_per_s)
    import uvicorn
    log.info("dry-run teacher (%s dialect) serving %r on http://%s:%d/v1", args.dialect,
             args.model, args.host, args.port)
    uvicorn.run(create_app(dry, key), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
