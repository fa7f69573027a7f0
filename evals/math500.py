"""MATH-500 (HuggingFaceH4/MATH-500, test: the 500-problem split of PRM800K); subcategory is
the subject, `level` 1-5 rides along; graded with math-verify on the last \\boxed{}."""

from distill.eval.benchmark import BOXED_INSTRUCTION, Benchmark, read_rows, user

HUB = "HuggingFaceH4/MATH-500"


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB)[:limit]
    return [{
        "id": f"math500/{row['unique_id']}",
        "source": "math500",
        "category": "reasoning",
        "subcategory": row["subject"],
        "level": int(row["level"]),
        "messages": user(f"{row['problem']}\n{BOXED_INSTRUCTION}"),
        "verifier": "math",
        "answer": row["answer"],
        "tests": None,
        "entry_point": None,
    } for row in rows]


# open-r1 / lighteval take 4 samples per MATH-500 question.
BENCHMARK = Benchmark(name="math500", version="prm800k@7ecc794", category="reasoning", hub=HUB,
                      load=load, samples=4)
