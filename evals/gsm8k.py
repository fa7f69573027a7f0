"""GSM8K (openai/gsm8k, main, test: 1319 grade-school word problems); gold is the number
after '####', commas removed; graded with math-verify on the last \\boxed{}."""

from distill.grading.benchmarks import BOXED_INSTRUCTION, Benchmark, fill, read_rows, user

HUB = "openai/gsm8k"
PROMPT = "{question}\n" + BOXED_INSTRUCTION


def load(data_file: str | None = None, limit: int | None = None) -> list[dict]:
    rows = read_rows(data_file, HUB, config="main")[:limit]
    return [{
        "id": f"gsm8k/{i}",
        "source": "gsm8k",
        "messages": user(fill(PROMPT, question=row["question"])),
        "verifier": "math",
        "answer": row["answer"].split("####")[-1].strip().replace(",", ""),
        "tests": None,
        "entry_point": None,
        "categories": {},
    } for i, row in enumerate(rows)]


BENCHMARK = Benchmark(name="gsm8k", version="openai/grade-school-math@3101c7d", category="reasoning",
                      hub=HUB, load=load, scorer="math", prompt=PROMPT)
