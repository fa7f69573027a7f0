"""Pulls the final answer out of a model's text: a math answer (`\\boxed{}` or a final-answer
line), a multiple-choice letter (GPQA style), or a code block. Pure functions of the text."""

from __future__ import annotations

import re


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


# "The answer is 5", "Final answer: 5", "**Answer:** 5", "#### 5" (GSM8K's own format).
_ANSWER_LINE = re.compile(
    r"(?:(?:final\s+answer|answer)\s*(?:is|:)\s*:?|^\s*####)\s*(.+?)\s*$", re.IGNORECASE)


def _strip_answer(value: str) -> str | None:
    value = value.strip().strip("*").strip()
    value = value.rstrip(".").strip()
    if value.startswith("$") and value.endswith("$"):
        value = value.strip("$").strip()
    elif value.startswith("\\(") and value.endswith("\\)"):
        value = value[2:-2].strip()
    return value or None


def extract_answer(text: str) -> str | None:
    """The last \\boxed{} answer, else the value of a final-answer line among the last three
    non-empty lines ("the answer is X", "Final Answer: X", "**Answer:** X", "#### X")."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for line in reversed([ln for ln in text.strip().splitlines() if ln.strip()][-3:]):
        m = _ANSWER_LINE.search(line.replace("**", ""))
        if m:
            return _strip_answer(m.group(1))
    return None


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The multiple-choice letter a model settled on, or None. In order of trust: the last
    \\boxed{X} (also \\boxed{\\text{X}}, \\boxed{(X)}), the last "answer is X" / "Answer: X"
    (with optional parentheses, bold or `$`), a last line that is only the letter ("C",
    "(C)", "**C**", "C." or "C) ..." ). Letters outside `letters` are ignored."""
    cls = f"[{re.escape(letters)}]"
    boxed = last_boxed(text)
    if boxed is not None:
        inner = re.sub(r"\\text(?:bf)?\s*\{([^{}]*)\}", r"\1", boxed).strip().strip("()").strip()
        if re.fullmatch(cls, inner):
            return inner
    pattern = re.compile(
        rf"answer\s*(?:is|:)?\s*:?\s*(?:option\s+|choice\s+)?[\*\$\s\(\[]*({cls})(?![A-Za-z])",
        re.IGNORECASE)
    found = [m.group(1) for m in pattern.finditer(text.replace("**", ""))]
    found = [f for f in found if f in letters]
    if found:
        return found[-1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = re.fullmatch(rf"[\*\(\[\s]*({cls})[\*\)\]\.:\s]*(?:[\)\.:]\s.*)?", lines[-1])
        if m:
            return m.group(1)
    return None


def extract_code(text: str) -> str:
    """The last ```python block, else the last ``` block, else the whole text."""
    blocks = re.findall(r"```[ \t]*(\w*)[^\n]*\n(.*?)```", text, re.DOTALL)
    python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return text
