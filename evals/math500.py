"""MATH-500 (HuggingFaceH4/MATH-500, test: the 500-problem split of PRM800K); categories are
the subject (7) and the level (1-5); graded with math-verify on the last \\boxed{}."""

from distill.grading.benchmarks import BOXED_INSTRUCTION, Benchmark, fill, read_rows, user

HUB = "HuggingFaceH4/MATH-500"
PROMPT = "{problem}\n" + BOXED_INSTRUCTION


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB)[:limit]
    return [{
        "id": f"math500/{row['unique_id']}",
        "source": "math500",
        "messages": user(fill(PROMPT, problem=row["problem"])),
        "verifier": "math",
        "answer": row["answer"],
        "tests": None,
        "entry_point": None,
        "categories": {"subject": row["subject"], "level": int(row["level"])},
    } for row in rows]


# open-r1 / lighteval take 4 samples per MATH-500 question.
BENCHMARK = Benchmark(name="math500", version="prm800k@7ecc794", category="reasoning", hub=HUB,
                      load=load, scorer="math", prompt=PROMPT, categories=("subject", "level"),
                      samples=4)
