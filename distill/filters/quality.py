"""Format checks on one generation record (reasoning, content, finish_reason): each returns a
rejection reason, or None when the record passes. Cheap, so they run before verification."""

from __future__ import annotations

from distill.grading.repetition import repetition  # noqa: F401  (a format check of this stage)


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


def length(tokens: int, min_tokens: int | None, max_tokens: int | None) -> str | None:
    if min_tokens is not None and tokens < min_tokens:
        return f"too short ({tokens} tokens < {min_tokens})"
    if max_tokens is not None and tokens > max_tokens:
        return f"too long ({tokens} tokens > {max_tokens})"
    return None
