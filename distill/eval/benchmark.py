"""Benchmarks: a `Benchmark` per file in evals/, discovered by name; loaders read the Hub or
a local file and return problem dicts (id, source, category, subcategory, messages, verifier,
answer / tests, entry_point)."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

EVALS_DIR = Path(__file__).resolve().parents[2] / "evals"
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the complete function in a single ```python code block."


@dataclass
class Benchmark:
    name: str
    version: str                 # dataset release; `resolved_version` adds the file hash
    category: str                # reasoning | coding
    hub: str                     # Hub dataset id read when no local file is given
    load: Callable[[str | None, int | None], list[dict]]   # (data_file, limit) -> problems
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768

    def resolved_version(self, data_file: str | None = None) -> str:
        """The version recorded with results: a local file is pinned by its content hash."""
        if data_file is None:
            return self.version
        return f"{self.version}+sha256.{file_sha256(data_file)[:16]}"


def get_benchmark(name: str) -> Benchmark:
    if not (EVALS_DIR / f"{name}.py").is_file():
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}")
    bench = importlib.import_module(f"evals.{name}").BENCHMARK
    if bench.name != name:
        raise ValueError(f"evals/{name}.py declares benchmark {bench.name!r}")
    return bench


def list_benchmarks() -> list[str]:
    return sorted(p.stem for p in EVALS_DIR.glob("*.py") if not p.stem.startswith("_"))


# ---------------------------------------------------------------------- shared by loaders

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(data_file: str | None, hub: str, *, split: str = "test",
              config: str | None = None) -> list[dict]:
    """Rows of a local .jsonl / .jsonl.gz / .json file, or of the Hub dataset."""
    if data_file is None:
        from datasets import load_dataset
        return list(load_dataset(hub, config, split=split))
    path = Path(data_file)
    if not path.is_file():
        from distill.errors import InputError
        raise InputError("benchmark data file not found", file=str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if path.name.endswith(".json"):
            return json.load(f)
        return [json.loads(line) for line in f if line.strip()]


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]
