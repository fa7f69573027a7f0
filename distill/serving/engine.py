"""The batching engine behind distill's own server: the model, the tokenizer and one worker
thread. Request handlers put `_Work` on a queue; the worker collects what arrives within
`batch_wait_ms`, groups rows with the same sampling parameters (n samples = n rows), left-pads
and runs one `generate` call with the KV cache. Per-row `max_tokens` and stop strings end rows
independently inside the batch. Seeded requests batch too: each row samples from a generator of
its own, so its tokens are the same whatever it runs beside.
"""

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from distill.serving.protocol import END_THINK, ChatRequest, CompletionRequest, Message, split_reasoning

log = logging.getLogger("distill.serving.server")


@dataclass
class _Work:
    """One request: `n` rows that share a prompt and sampling parameters."""
    req: ChatRequest
    prompt_ids: list[int]
    max_tokens: int
    stops: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    rows: list[dict] = field(default_factory=list)

    def group_key(self) -> tuple:
        greedy = self.req.temperature == 0
        # Seeded rows sample from their own generators (_SeededSampling), unseeded ones from
        # torch's: the two kinds run apart. Stop tokens end every row of a generate call:
        # requests with others run apart too.
        return (greedy, None if greedy else self.req.temperature,
                None if greedy else self.req.top_p,
                not greedy and self.req.seed is not None,
                tuple(sorted(getattr(self.req, "stop_token_ids", None) or ())))

    def stop_ids(self, eos_ids: set[int]) -> set[int]:
        return eos_ids | set(getattr(self.req, "stop_token_ids", None) or ())


class Engine:
    """The model, the tokenizer and the batching worker thread."""

    def __init__(self, model_path: str, revision: str | None = None, batch_wait_ms: float = 50,
                 max_batch_rows: int = 256, max_model_len: int | None = None,
                 strict_context: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tok = AutoTokenizer.from_pretrained(model_path, revision=revision)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, revision=revision, dtype=dtype)
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        # MoE models: router logits feed a training-only loss; computing them slows decoding.
        if hasattr(self.model.config, "output_router_logits"):
            self.model.config.output_router_logits = False
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else min(self.eos_ids)
        self.max_len = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        if max_model_len:   # vLLM's --max-model-len: the context this server accepts
            self.max_len = min(self.max_len, max_model_len)
        # vLLM refuses a request whose prompt plus max_tokens exceed the context (400); this
        # server shortens max_tokens instead, unless told to answer as vLLM does.
        self.strict_context = strict_context
        end_think = self.tok.convert_tokens_to_ids(END_THINK) if END_THINK in self.tok.get_vocab() else None
        self.end_think_id = end_think
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_batch_rows = max_batch_rows
        self.queue: queue.Queue[_Work] = queue.Queue()
        self.lock = threading.Lock()  # one forward pass at a time: generation or scoring
        self.metrics = dict(requests=0, samples_requested=0, completions=0, prompt_tokens=0, completion_tokens=0,
                            batches=0, rows=0)
        threading.Thread(target=self._worker, daemon=True, name="generate").start()

    # -- called on the event loop
    def prepare(self, req: ChatRequest, loop: asyncio.AbstractEventLoop) -> _Work:
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                            **(req.chat_template_kwargs or {}))
        # The template already holds the special tokens; adding them again would double a BOS.
        ids = self.tok(text, add_special_tokens=False).input_ids
        room = self.max_len - len(ids)
        if room < 1:
            raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {self.max_len}")
        asked = req.max_completion_tokens or req.max_tokens or room
        if self.strict_context and asked > room:
            raise ValueError(f"'max_tokens' or 'max_completion_tokens' is too large: {asked}. This "
                             f"model's maximum context length is {self.max_len} tokens and your "
                             f"request has {len(ids)} input tokens ({asked} > {self.max_len} - {len(ids)}).")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return _Work(req, ids, min(asked, room), [s for s in stops if s], loop, loop.create_future())

    def prepare_ids(self, ids: list[int], req: CompletionRequest, loop) -> _Work:
        """A completions prompt: token ids as given, no chat template."""
        if not ids or len(ids) >= self.max_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {self.max_len}")
        if any(not 0 <= t < len(self.tok) for t in ids):
            raise ValueError(f"prompt token ids must lie in [0, {len(self.tok)})")
        carrier = ChatRequest(messages=[Message(role="user", content="")], n=req.n,
                              temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                              logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return _Work(carrier, list(ids), min(req.max_tokens, self.max_len - len(ids)),
                     [s for s in stops if s], loop, loop.create_future())

    def score(self, prompts: list[list[int]], k: int) -> list[list]:
        """vLLM's `prompt_logprobs`: per prompt, None for the first position, then for each
        later position {token_id: {logprob, rank, decoded_token}} over the top-k and the actual
        token (rank 1 = most likely). Raw model log-probabilities, as vLLM reports them."""
        torch = self.torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p)
            mask[i, :len(p)] = 1
        with self.lock, torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        out = []
        for i, p in enumerate(prompts):
            rows: list = [None]
            for pos in range(1, len(p)):
                row, actual = logp[i, pos - 1], p[pos]
                entries = {}
                if k:
                    values, idx = row.topk(k)
                    for rank, (v, t) in enumerate(zip(values.tolist(), idx.tolist()), 1):
                        entries[str(t)] = self._ranked(t, v, rank)
                if str(actual) not in entries:
                    v = float(row[actual])
                    entries[str(actual)] = self._ranked(actual, v, 1 + int((row > v).sum()))
                rows.append(entries)
            out.append(rows)
        return out

    def _ranked(self, token_id: int, logprob: float, rank: int) -> dict:
        return {"logprob": max(logprob, -9999.0), "rank": rank,
                "decoded_token": self.tok.decode([token_id], skip_special_tokens=False)}

    # -- the worker thread
    def _worker(self) -> None:
        while True:
            pending = [self.queue.get()]
            deadline = time.monotonic() + self.batch_wait_s
            rows = pending[0].req.n
            while rows < self.max_batch_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    w = self.queue.get(timeout=left)
                except queue.Empty:
                    break
                pending.append(w)
                rows += w.req.n
            groups: dict[tuple, list[_Work]] = {}
            for w in pending:
                groups.setdefault(w.group_key(), []).append(w)
            for works in groups.values():
                self._run_group(works)

    def _run_group(self, works: list[_Work]) -> None:
        # Split so that no generate call holds more than max_batch_rows rows (a request's n
        # rows stay together).
        chunk: list[_Work] = []
        for w in works:
            if chunk and sum(c.req.n for c in chunk) + w.req.n > self.max_batch_rows:
                self._run_chunk(chunk)
                chunk = []
            chunk.append(w)
        if chunk:
            self._run_chunk(chunk)

    def _run_chunk(self, works: list[_Work]) -> None:
        try:
            results = self._generate(works)
        except Exception as e:  # a failed batch fails its requests, never the worker
            log.exception("generation failed")
            for w in works:
                w.loop.call_soon_threadsafe(_set_exception, w.future, e)
            return
        for w, res in zip(works, results):
            w.loop.call_soon_threadsafe(_set_result, w.future, res)

    def _generate(self, works: list[_Work]) -> list[list[dict]]:
        torch = self.torch
        rows = [w for w in works for _ in range(w.req.n)]
        width = max(len(w.prompt_ids) for w in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, w in enumerate(rows):
            input_ids[i, width - len(w.prompt_ids):] = torch.tensor(w.prompt_ids)
            mask[i, width - len(w.prompt_ids):] = 1
        req = works[0].req
        want_logprobs = any(w.req.logprobs or w.req.top_logprobs for w in works)
        stop = _RowStop(self.tok, width, [w.max_tokens for w in rows], [w.stops for w in rows])
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(w.max_tokens for w in rows), pad_token_id=self.pad_id,
            eos_token_id=sorted(works[0].stop_ids(self.eos_ids)), stopping_criteria=[stop],
            return_dict_in_generate=True, output_logits=want_logprobs,
            repetition_penalty=1.0)
        if req.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None)
        elif req.seed is not None:
            # Each row its own sample, the same whatever else runs in the batch: generate picks
            # the best of the scores the processor returns, which is a sample (Gumbel-max).
            # Every request of the group is seeded (group_key).
            seeds = [_row_seed(w.req.seed or 0, j) for w in works for j in range(w.req.n)]
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                          logits_processor=[_SeededSampling(req.temperature, req.top_p, seeds)])
        else:
            # OpenAI semantics: no top-k, whatever the model's generation_config says.
            kwargs.update(do_sample=True, temperature=req.temperature, top_p=req.top_p, top_k=0)
        with self.lock, torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device),
                                      attention_mask=mask.to(self.device), **kwargs)
        gen = out.sequences[:, width:].cpu()
        logp = None
        if want_logprobs:  # [rows, steps, vocab]; raw model log-probabilities, as vLLM reports
            logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1).cpu()
        self.metrics["batches"] += 1
        self.metrics["rows"] += len(rows)

        results: list[list[dict]] = []
        r = 0
        for w in works:
            choices = []
            for _ in range(w.req.n):
                choices.append(self._choice(w, gen[r].tolist(), stop.stopped_at[r],
                                            None if logp is None else logp[r]))
                r += 1
            results.append(choices)
        return results

    def _choice(self, w: _Work, ids: list[int], stop_len: int | None, logp) -> dict:
        ids = counted = ids[: w.max_tokens]
        finish, n_tokens = "length", len(ids)
        stops = w.stop_ids(self.eos_ids)
        eos_at = next((i for i, t in enumerate(ids) if t in stops), None)
        if eos_at is not None and (stop_len is None or eos_at < stop_len):
            # EOS counts as a completion token and has a logprob (as in vLLM), but no text.
            finish, n_tokens, ids, counted = "stop", eos_at + 1, ids[:eos_at], ids[:eos_at + 1]
        elif stop_len is not None:
            finish, n_tokens, ids = "stop", stop_len, ids[:stop_len]
            counted = ids
        text = str(self.tok.decode(ids, skip_special_tokens=True))
        if finish == "stop" and w.stops:  # the stop string itself is not returned (OpenAI)
            cut = min((text.find(s) for s in w.stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        reasoning, content = split_reasoning(text)
        if reasoning is None:
            reasoning_tokens = 0
        elif self.end_think_id is not None and self.end_think_id in ids:
            reasoning_tokens = ids.index(self.end_think_id) + 1
        else:
            reasoning_tokens = len(self.tok(reasoning, add_special_tokens=False).input_ids)
        choice: dict[str, Any] = dict(finish_reason=finish, text=text, reasoning=reasoning, content=content,
                      completion_tokens=n_tokens, reasoning_tokens=reasoning_tokens, logprobs=None)
        if logp is not None and (w.req.logprobs or w.req.top_logprobs):
            choice["logprobs"] = self._logprobs(counted, logp, w.req.top_logprobs,
                                                w.req.return_tokens_as_token_ids)
        return choice

    def _logprobs(self, ids: list[int], logp, k: int, as_ids: bool = False) -> dict:
        content = []
        for step, t in enumerate(ids):
            row = logp[step]
            entry = self._token_entry(t, float(row[t]), as_ids)
            top = []
            if k:
                values, idx = row.topk(k)
                top = [self._token_entry(int(i), float(v), as_ids) for v, i in zip(values, idx)]
            entry["top_logprobs"] = top
            content.append(entry)
        return {"content": content}

    def _token_entry(self, token_id: int, logprob: float, as_ids: bool = False) -> dict:
        text = str(self.tok.decode([token_id], skip_special_tokens=False))
        token = f"token_id:{token_id}" if as_ids else text
        return {"token": token, "logprob": max(logprob, -9999.0), "bytes": list(text.encode())}


def _row_seed(seed: int, row: int) -> int:
    """The generator seed of a request's `row`-th sample (requests' seeds are below 2**63)."""
    return (seed * 1_000_003 + row) % (1 << 63)


class _SeededSampling:
    """Samples every row from its own generator: the logits are scaled by the temperature and
    cut to the top-p nucleus as sampling does (transformers' own warpers), then each row gets
    Gumbel noise from its generator, so that the largest score is a draw from the row's
    distribution. A row's tokens depend on its seed and its logits alone, not on the rows
    beside it or on how many steps the batch runs (each row draws one vector per step)."""

    def __init__(self, temperature: float, top_p: float, seeds: list[int]):
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
        self.warpers: list[Any] = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.seeds = seeds
        self.generators: list[Any] = []   # made on the scores' device at the first step

    def __call__(self, input_ids, scores):
        import torch
        if not self.generators:   # no copy from the CPU per step
            self.generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        tiny = torch.finfo(torch.float32).tiny
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                         for g in self.generators])
        exponential = -torch.log(u.clamp_min(tiny))          # Exp(1) draws
        return scores.float() - torch.log(exponential.clamp_min(tiny))   # + Gumbel(0, 1)


class _RowStop:
    """Ends each row at its own max_tokens or stop string; generate stops when all rows have.
    Remembers, per row, how many tokens it had when a stop string appeared."""

    def __init__(self, tok, prompt_width: int, max_tokens: list[int], stops: list[list[str]]):
        self.tok, self.width, self.max_tokens, self.stops = tok, prompt_width, max_tokens, stops
        self.tail = max((len(s) for ss in stops for s in ss), default=0) + 8
        self.stopped_at: list[int | None] = [None] * len(max_tokens)

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        n = input_ids.shape[1] - self.width
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for r in range(input_ids.shape[0]):
            if self.stopped_at[r] is not None or n >= self.max_tokens[r]:
                done[r] = True
                continue
            if self.stops[r]:
                # Decode only a short tail: a stop string can only have appeared at the end.
                tail = self.tok.decode(input_ids[r, -min(n, self.tail):].tolist(), skip_special_tokens=True)
                if any(s in tail for s in self.stops[r]):
                    self.stopped_at[r] = n
                    done[r] = True
        return done


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
