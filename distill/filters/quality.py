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
