"""The vLLM offline engine as a teacher backend (`teacher.backend: vllm_offline`): `vllm.LLM`
in this process, fed the same `Job`s as the HTTP client and answering through the same
`on_done(job, Response)` callback, so the generate stage writes the same records.

Jobs go to the engine in chunks (`chunk` requests per `LLM.chat` call, which vLLM schedules
together): each chunk's records are written when it finishes, so a kill loses at most one
chunk. Reasoning is split from `<think>` tags as the HTTP client does (the engine has no
reasoning parser); logprobs come back in the chat API's shape with "token_id:N" tokens.
Needs `pip install 'distill[vllm]'` and a GPU.
"""

from __future__ import annotations

import time
from typing import Callable

from distill.teacher.client import Failure, Job, Response, parse_choice
from distill.teacher.progress import Progress
from distill.serving.protocol import END_THINK


def _logprobs(token_ids: list[int], steps: list[dict], k: int) -> list[dict]:
    """vLLM's per-step {token_id: Logprob(logprob, rank, decoded_token)} as chat-API content."""
    content = []
    for tid, step in zip(token_ids, steps):
        top = sorted(step.items(), key=lambda kv: kv[1].rank)[:k]
        content.append({"token": f"token_id:{tid}", "logprob": max(step[tid].logprob, -9999.0),
                        "top_logprobs": [{"token": f"token_id:{t}", "logprob": max(lp.logprob, -9999.0)}
                                         for t, lp in top]})
    return content


class OfflineEngine:
    def __init__(self, teacher_cfg, chunk: int = 512):
        self.cfg = teacher_cfg
        self.chunk = chunk
        self._llm = None

    def llm(self):
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError:
                raise RuntimeError("teacher.backend vllm_offline needs vLLM: pip install 'distill[vllm]'") from None
            v = self.cfg.vllm
            kwargs = dict(model=self.cfg.model, revision=self.cfg.revision,
                          tensor_parallel_size=v.tensor_parallel_size,
                          pipeline_parallel_size=v.pipeline_parallel_size,
                          enable_expert_parallel=v.expert_parallel,
                          gpu_memory_utilization=v.gpu_memory_utilization)
            if v.max_model_len:
                kwargs["max_model_len"] = v.max_model_len
            if v.dtype:
                kwargs["dtype"] = v.dtype
            self._llm = LLM(**kwargs)
            tok = self._llm.get_tokenizer()
            self.end_think = tok.convert_tokens_to_ids(END_THINK) if END_THINK in tok.get_vocab() else None
        return self._llm

    def _params(self, job: Job):
        from vllm import SamplingParams
        extra = {k: v for k, v in job.extra_body.items() if k in ("seed", "stop", "min_p", "top_k")}
        return SamplingParams(n=job.n, temperature=job.temperature, top_p=job.top_p,
                              max_tokens=job.max_tokens, logprobs=job.top_logprobs or None, **extra)

    def _response(self, job: Job, out, latency_s: float) -> Response:
        choices, completion, reasoning = [], 0, 0
        for o in out.outputs:
            ids = list(o.token_ids)
            completion += len(ids)
            if self.end_think is not None and self.end_think in ids:
                reasoning += ids.index(self.end_think) + 1
            raw = {"message": {"content": o.text}, "finish_reason": o.finish_reason or "stop"}
            if job.top_logprobs and o.logprobs:
                raw["logprobs"] = {"content": _logprobs(ids, o.logprobs, job.top_logprobs)}
            choices.append(parse_choice(raw))
        prompt = len(out.prompt_token_ids or [])
        return Response(choices=choices, latency_s=latency_s,
                        usage={"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion,
                               "completion_tokens_details": {"reasoning_tokens": reasoning}})

    def complete_all(self, jobs: list[Job], on_done: Callable[[Job, Response], None], *,
                     progress: Progress | None = None) -> list[Failure]:
        llm = self.llm()
        failures: list[Failure] = []
        for start in range(0, len(jobs), self.chunk):
            chunk = jobs[start:start + self.chunk]
            t0 = time.monotonic()
            try:
                if progress:
                    for _ in chunk:
                        progress.attempt()
                outs = llm.chat([j.messages for j in chunk], [self._params(j) for j in chunk], use_tqdm=False)
                pairs = list(zip(chunk, outs))
            except Exception:
                # One bad prompt (too long for the context, a template error) fails the whole
                # call: run the chunk's requests one by one to fail only that one.
                pairs = []
                for j in chunk:
                    try:
                        pairs.append((j, llm.chat([j.messages], [self._params(j)], use_tqdm=False)[0]))
                    except Exception as e:
                        failures.append(Failure(j, f"vLLM engine: {type(e).__name__}: {e}", "engine", 1, False))
                        if progress:
                            progress.error("engine")
            latency = time.monotonic() - t0
            for j, out in pairs:
                on_done(j, self._response(j, out, latency))
        return failures
