"""GPQA Diamond (Idavidrein/gpqa, gpqa_diamond, train: 198 graduate-level multiple-choice
questions in physics, chemistry and biology; gated on the Hub: accept its terms and set
HF_TOKEN). The correct answer and the three distractors are shuffled per question with a seeded
generator (option `seed`), so the gold letter is spread over A-D and every model, every run,
sees the same order; graded by the letter on the final `Answer: X` line (or a last \\boxed{X}).
Categories: the high-level domain and the subdomain."""

import random

from distill.grading.benchmarks import Benchmark, field_of, fill, read_rows, user

HUB = "Idavidrein/gpqa"
LETTERS = "ABCD"
PROMPT = ("Answer the following multiple choice question. The last line of your response should "
          "be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of "
          "ABCD. Think step by step before answering.\n\n{question}\n\nA) {A}\nB) {B}\nC) {C}\n"
          "D) {D}")


def shuffled(row_id: str, correct: str, wrong: list[str], seed: int) -> tuple[list[str], str]:
    """The four options in a seeded order and the gold letter. The generator is seeded by
    the question's id, not by its position, so the order survives filtering and reordering."""
    options = [correct, *wrong]
    random.Random(f"{seed}/{row_id}").shuffle(options)
    return options, LETTERS[options.index(correct)]


def load(data_file: str | None = None, limit: int | None = None, seed: int = 1234) -> list[dict]:
    rows = read_rows(data_file, HUB, config="gpqa_diamond", split="train")
    problems = []
    for i, row in enumerate(rows[:limit]):
        rid = str(row.get("Record ID") or i)
        correct = str(field_of(row, "Correct Answer", file=data_file)).strip()
        wrong = [str(field_of(row, f"Incorrect Answer {j}", file=data_file)).strip()
                 for j in (1, 2, 3)]
        options, gold = shuffled(rid, correct, wrong, seed)
        question = str(field_of(row, "Question", file=data_file)).strip()
        problems.append({
            "id": f"gpqa_diamond/{rid}",
            "source": "gpqa_diamond",
            "messages": user(fill(PROMPT, question=question, **dict(zip(LETTERS, options)))),
            "verifier": "choice",
            "answer": gold,
            "choices": options,
            "tests": None,
            "entry_point": None,
            "categories": {"domain": str(row.get("High-level domain") or "").strip() or None,
                           "subdomain": str(row.get("Subdomain") or "").strip() or None},
        })
    return problems


# lighteval and open-r1 take 8 samples per GPQA question.
BENCHMARK = Benchmark(name="gpqa_diamond", version="gpqa-diamond", category="reasoning", hub=HUB,
                      load=load, scorer="choice", prompt=PROMPT,
                      categories=("domain", "subdomain"), options={"seed": 1234}, samples=8)
