"""Format checks on one generation record (reasoning, content, finish_reason): each returns a
rejection reason, or None when the record passes. Cheap, so they run before verification."""

from __future__ import annotations


def truncated(gen: dict) -> str | None:
    """A trace cut at max_tokens ends mid-thought: its answer, if any, is luck."""
    if gen.get("finish_reason") == "length":
        return "truncated (finish_reason=length)"
    return None


def think(gen: dict) -> str | None:
    """Reasoning arrives split off by the server (reasoning is None when there was no
    <think> block); leftover tags on either side mean the split went wrong."""
    reasoning, content = gen.get("reasoning"), gen.get("content") or ""
    if reasoning is None:
        return "no <think> block"
    if "<think>" in reasoning or "</think>" in reasoning or "<think>" in content \
            or "</think>" in content:
        return "unbalanced <think> tags"
    if not reasoning.strip():
        return "empty <think> block"
    return None


def empty(gen: dict) -> str | None:
    if not (gen.get("content") or "").strip():
        return "empty answer"
    return None


def final_answer(gen: dict) -> str | None:
    """The answer has what its verifier reads: a math answer (\\boxed{} or a final-answer
    line), a choice letter, or code. Checked before verification so the report tells a
    missing answer from a wrong one."""
    from distill.grading.extract import extract_answer, extract_choice, extract_code

    kind = gen.get("verifier") or "none"
    content = gen.get("content") or ""
    if kind == "math" and extract_answer(content) is None:
        return "no final answer (\\boxed{} or 'the answer is')"
    if kind == "choice":
        letters = "ABCDEFGHIJ"[:len(gen.get("choices") or []) or 4]
        if extract_choice(content, letters) is None:
            return "no choice letter"
    if kind == "code" and extract_code(content) is content and not _parses(content):
        return "no code block"
    return None


def _parses(code: str) -> bool:
    import ast
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


# A repetition loop: the tail is one chunk repeated, or the text compresses far better than
# prose and code do (reasoning traces compress to ~30-40% with zlib; loops to a few percent).
LOOP_MIN_REPEATS = 4
LOOP_MIN_CHARS = 200
LOOP_MAX_PERIOD = 500
MIN_COMPRESSION = 0.12
COMPRESSION_MIN_CHARS = 2000


def _tail_loop(text: str) -> str | None:
    tail = text.rstrip()[-(LOOP_MAX_PERIOD * LOOP_MIN_REPEATS + LOOP_MAX_PERIOD):]
    longest = min(LOOP_MAX_PERIOD, len(tail) // LOOP_MIN_REPEATS)
    if longest < 1:
        return None
    # A period p can loop only where the last character recurs p back: test those p alone,
    # shortest first (numpy finds them; testing every p costs milliseconds a trace).
    import numpy as np
    chars = np.frombuffer(tail[-(longest + 1):].encode("utf-32-le"), dtype=np.uint32)
    for period in (np.flatnonzero(chars[::-1][1:] == chars[-1]) + 1).tolist():
        unit = tail[-period:]
        repeats = 1
        while tail.endswith(unit * (repeats + 1)):
            repeats += 1
        if repeats >= LOOP_MIN_REPEATS and repeats * period >= LOOP_MIN_CHARS:
            return f"repetition loop: {unit.strip()[:40]!r} x{repeats} at the end"
    return None


def repetition(gen: dict, min_compression: float = MIN_COMPRESSION) -> str | None:
    """A loop at the end of the reasoning or of the answer (a looping thought followed by a
    final answer is still a degenerate trace), or a text that is repetitive throughout."""
    import zlib

    for part in (gen.get("reasoning") or "", gen.get("content") or ""):
        why = _tail_loop(part)
        if why:
            return why
    text = (gen.get("reasoning") or "") + "\n" + (gen.get("content") or "")
    if len(text) >= COMPRESSION_MIN_CHARS:
        ratio = len(zlib.compress(text.encode(), 6)) / len(text.encode())
        if ratio < min_compression:
            return f"repetitive (compresses to {ratio:.0%})"
    return None


def length(tokens: int, min_tokens: int | None, max_tokens: int | None) -> str | None:
    if min_tokens is not None and tokens < min_tokens:
        return f"too short ({tokens} tokens < {min_tokens})"
    if max_tokens is not None and tokens > max_tokens:
        return f"too long ({tokens} tokens > {max_tokens})"
    return None
