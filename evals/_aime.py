"""Shared by aime24 and aime25: AIME rows (problem, integer answer 0-999) as math problems,
with the contest (I or II) as category."""

import re

from distill.grading.benchmarks import BOXED_INSTRUCTION, field_of, fill, read_rows, user

PROMPT = "{problem}\n" + BOXED_INSTRUCTION
_CONTEST = re.compile(r"AIME_(I{1,2})_")


def _repair(text: str) -> str:
    r"""A known escape bug of some AIME 2025 copies: `\frac` stored as form feed + "rac",
    `\triangle` as TAB + "riangle". LaTeX never holds either control character."""
    return text.replace("\x0c", "\\f").replace("\t", "\\t")


def load_aime(name: str, hub: str, data_file: str | None, limit: int | None,
              split: str) -> list[dict]:
    rows = read_rows(data_file, hub, split=split)
    problems = []
    for i, row in enumerate(rows):
        answer = str(field_of(row, "answer", file=data_file)).strip()
        m = _CONTEST.search(str(row.get("url") or ""))
        # Without a URL the copies list contest I (problems 1-15) before contest II.
        contest = m.group(1) if m else ("I" if i < 15 else "II") if len(rows) == 30 else None
        problems.append({
            "id": f"{name}/{row.get('id', i)}",
            "source": name,
            "messages": user(fill(PROMPT, problem=_repair(field_of(row, "problem", "question",
                                                                    file=data_file)))),
            "verifier": "math",
            # AIME answers are integers; some copies zero-pad them ("025").
            "answer": str(int(answer)) if answer.isdigit() else answer,
            "tests": None,
            "entry_point": None,
            "categories": {"contest": contest},
        })
    return problems[:limit]
