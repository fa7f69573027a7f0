"""Repetition loops in a model's text: the filter stage drops traces caught in one (a format
check), the evaluate stage counts the answers that are (what a model broken by quantization or
export writes)."""

from __future__ import annotations

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
