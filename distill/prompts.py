"""Prompts stage: reads the recipe's sources (toy tasks, a Hub dataset or a local JSONL) and
writes one problem record per prompt to `<run_dir>/prompts/`.

A record's id is hash(source, prompt), so the same prompt is the same record in every run and a
refresh with new rows only adds records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from distill.config import PromptSource, Recipe
from distill.errors import InputError
from distill.records import RunDir, record_id


def _toy_rows(src: PromptSource, seed: int) -> Iterator[dict]:
    from distill.toy.tasks import make_tasks
    try:
        tasks = make_tasks(src.family or "", src.count, seed=seed, split="train")
    except KeyError as e:
        raise InputError(str(e).strip("'\""), key=f"prompts.sources.{src.name}.family") from None
    for t in tasks:
        yield {"prompt": t["messages"][-1]["content"], "answer": t["answer"], "tests": t["tests"],
               "entry_point": t.get("entry_point"), "subcategory": t["subcategory"],
               "verifier": t["verifier"]}


def _jsonl_rows(src: PromptSource) -> Iterator[dict]:
    path = Path(src.path or "")
    if not path.is_file():
        raise InputError("prompt file not found", file=str(path), key=f"prompts.sources.{src.name}.path")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield _map_row(src, json.loads(line), file=str(path), line=n)
                except json.JSONDecodeError as e:
                    raise InputError(f"not valid JSON ({e.msg})", file=str(path), line=n) from None


def _hf_rows(src: PromptSource) -> Iterator[dict]:
    import datasets
    ds = datasets.load_dataset(src.path, src.config_name, split=src.split, revision=src.revision)
    for n, row in enumerate(ds):
        yield _map_row(src, row, file=f"hf://{src.path}", line=n + 1)


def _map_row(src: PromptSource, row: dict, file: str, line: int) -> dict:
    def field(name: str | None) -> object:
        if name is None:
            return None
        if name not in row:
            raise InputError(f"row has no field {name!r} (fields: {sorted(row)})", file=file,
                             line=line, key=f"prompts.sources.{src.name}")
        return row[name]

    prompt = str(field(src.prompt_field))
    answer, tests = field(src.answer_field), field(src.tests_field)
    if isinstance(tests, list):
        tests = "\n".join(tests)
    return {"prompt": prompt,
            "answer": None if answer is None else str(answer),
            "tests": tests, "entry_point": field(src.entry_point_field), "subcategory": None,
            "verifier": "code" if tests else ("math" if answer is not None else "none")}


def _rows(src: PromptSource, seed: int) -> Iterator[dict]:
    if src.kind == "toy":
        yield from _toy_rows(src, seed)
    elif src.kind == "jsonl":
        yield from _jsonl_rows(src)
    else:
        yield from _hf_rows(src)


def run_prompts(cfg: Recipe, run_dir: Path) -> dict:
    stage = RunDir(run_dir).stage("prompts")
    stage.start()
    done = stage.ids()
    counts: dict[str, int] = {}
    with stage.writer() as w:
        for src in cfg.prompts.sources:
            n = 0
            for row in _rows(src, cfg.run.seed):
                if src.count is not None and n >= src.count:
                    break
                n += 1
                rid = record_id(src.name, row["prompt"])
                if rid in done:
                    continue
                done.add(rid)
                messages = [{"role": "user", "content": src.prompt_template.format(prompt=row["prompt"])}]
                if cfg.prompts.system_prompt:
                    messages.insert(0, {"role": "system", "content": cfg.prompts.system_prompt})
                w.write({"id": rid, "source": src.name, "category": src.category,
                         "subcategory": row["subcategory"], "messages": messages,
                         "verifier": row["verifier"], "answer": row["answer"],
                         "tests": row["tests"], "entry_point": row["entry_point"]})
            counts[src.name] = n
    stage.complete(sources=counts)
    return counts
