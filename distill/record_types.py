"""The shape of every record in a run directory, one TypedDict per folder (distill/records.py
says which stage writes which folder). Records stay plain dicts, on disk (one JSON object per
line) and in memory: these types only tell a reader, and a type checker, every field a
record has. The stage that writes a record builds it through its type.

    prompts/   Prompt        one per prompt                  (distill/prompts.py)
    generate/  Trace         one per teacher sample          (distill/generate.py)
    filter/    FilterVerdict one per trace graded            (distill/filters/stage.py)
    dataset/   KeptExample   one per kept trace, to train on (distill/filters/stage.py)
    eval/      EvalSample    one per sample a model answered (distill/eval/answers.py)
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired  # typing's from Python 3.11


class Message(TypedDict):
    role: str                       # system, user or assistant
    content: str


class Prompt(TypedDict):
    """prompts/: a prompt of one of the recipe's sources, with its gold answer or tests."""
    id: str                         # record_id(source name, messages): stable across runs
    source: str                     # the recipe's prompts.sources[].name
    shape: str                      # hash of the source's settings: a change drops its records
    category: str | None            # task category (reasoning, coding, ...), from the source
    subcategory: str | None         # finer label from the row (toy: carries=1, plus, ...)
    messages: list[Message]         # the chat to send: optional system prompt, the user turn
    verifier: str                   # how a trace is graded: math, code, choice or none
    answer: str | None              # gold answer (math, choice)
    tests: str | None               # gold tests (code), one program
    entry_point: str | None         # the function the tests call (code)
    source_revision: str | None     # the Hub commit or content hash the row was read at


class Usage(TypedDict):
    """A request's token usage, in one shape whatever the server's dialect."""
    prompt_tokens: int
    completion_tokens: int          # over all of the request's choices
    reasoning_tokens: int
    cached_prompt_tokens: int
    choices: int                    # samples the request returned: a sample's share is 1/choices


class TeacherLogprobs(TypedDict):
    """The teacher's per-token logprobs as parallel arrays (vocabulary ids, or token strings
    when the server gave no ids)."""
    tokens: list[int | str]         # the sampled tokens
    top_ids: list[list[int | str]]  # per token, the top-k candidates
    top_logprobs: list[list[float]] # per token, their logprobs (4 decimals)


class Trace(Prompt):
    """generate/: one teacher sample of a prompt: the prompt's fields, then these."""
    prompt_id: str                  # the Prompt's id (`id` is the sample's)
    sample_index: int               # 0 .. generate.samples_per_prompt - 1
    gen_hash: str                   # Recipe.generation_hash(): teacher and sampling settings
    reasoning: str | None           # the reasoning (reasoning_content or <think>...</think>)
    content: str | None             # the answer after the reasoning
    finish_reason: str | None       # stop, length (truncated), ...
    usage: Usage                    # the request's, shared by its n choices
    latency_s: float                # the request's
    attempts: int                   # requests sent until this answer (retries + 1)
    cost: float                     # dollars: this sample's share of the request's cost
    teacher: str                    # the teacher's model name as the recipe gives it
    teacher_logprobs: NotRequired[TeacherLogprobs]  # with generate.top_logprobs


class FilterVerdict(TypedDict):
    """filter/: what the filters said of one trace (not distill.grading's Verdict, the
    verifier's answer, which filter/verdicts/ stores)."""
    id: str                         # the Trace's id
    prompt_id: str | None
    kept: bool                      # passed every filter: its KeptExample is in dataset/
    failed: str | None              # the first filter that rejected it (truncated, verify, ...)
    reasons: dict[str, str]         # filter -> its reason, or "ok"


class KeptExample(TypedDict):
    """dataset/: a kept trace as the chat the student trains on."""
    id: str                         # the Trace's id
    prompt_id: str | None
    source: str | None
    category: str | None
    messages: list[Message]         # the prompt, then "<think>reasoning</think>content"
    teacher_logprobs: NotRequired[TeacherLogprobs]  # for train.method: logit_kd


class EvalSample(TypedDict):
    """eval/: one sample of one model on one benchmark question, graded."""
    id: str                         # record_id(role, weights key, benchmark, version, question,
                                    # sample, sampling, prompt): a change of any asks again
    role: Literal["teacher", "base", "student"]
    model: str                      # the name the leaderboard shows
    benchmark: str
    version: str                    # the benchmark's (pinned to a local file's content hash)
    task_id: str                    # the question's id in its benchmark
    categories: dict[str, Any]      # the benchmark's category axes -> the question's values
    sample: int                     # sample index, 0 .. n - 1
    correct: bool
    reason: str | None              # the verifier's reason
    answer: str | None              # the answer it votes for in maj@k
    content: str | None
    reasoning: str | None
    finish_reason: str | None
    sampling_hash: str              # hash of the benchmark's sampling settings
    max_tokens: int                 # what the request asked for (clamped to a served context)
    retried_attempts: int           # the request's retries, counted on its first sample only
    grade_retries: int              # gradings the grader failed and tried again
    prompt_tokens: NotRequired[int]  # the prompt as the served model's template counts it
    clamped: NotRequired[bool]      # max_tokens cut below the benchmark's to fit the context
