"""The streaming filter decides exactly what the whole-set, in-memory rules decide: the same
kept ids and the same reasons, whatever the batch size and however the traces are ordered on
disk. The reference here holds every trace in memory and clusters with datasketch's own
MinHashLSH (dedup.near_duplicates), as the filter did before it streamed."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from distill.config import load_recipe, recipe_path
from distill.filters import run_filter
from distill.filters.dedup import duplicates, near_duplicates
from distill.grading.decontaminate import prompt_text
from distill.records import RunDir, Stage

WORDS = [f"w{i}" for i in range(4000)]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(rng: random.Random, text: str, share: float) -> str:
    words = text.split()
    for _ in range(max(1, int(len(words) * share))):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


def _gens(seed: int = 0) -> list[dict]:
    """60 prompts x 4 samples with planted exact copies (whitespace changed), near-duplicate
    traces (2% of words changed), near-duplicate prompts (reworded by one word), and lengths
    that tie."""
    rng = random.Random(seed)
    prompts = []
    for p in range(60):
        text = _text(rng, 40)
        if p % 10 == 9:                                   # a near copy of the previous prompt
            text = _edit(rng, prompts[-1][1], 0.03)
        prompts.append((f"p{p:02d}", text))
    gens, pool = [], []
    for pid, text in prompts:
        for s in range(4):
            reasoning = _text(rng, rng.choice([60, 120, 120, 200]))
            if s == 1 and rng.random() < 0.5:             # an exact copy, other whitespace
                reasoning = "  " + gens[-1]["reasoning"].replace(" ", "   ")
            elif pool and rng.random() < 0.15:           # a near copy of an earlier trace
                reasoning = _edit(rng, rng.choice(pool), 0.02)
            pool.append(reasoning)
            answer = rng.choice(["7", "8"])
            gens.append({"id": f"{rng.getrandbits(40):010x}", "prompt_id": pid, "source": "syn",
                         "category": "reasoning", "verifier": "math", "answer": "7",
                         "messages": [{"role": "user", "content": text}],
                         "reasoning": reasoning, "content": f"So \\boxed{{{answer}}}.",
                         "finish_reason": "stop"})
    return gens


def _reference(gens: list[dict], fc) -> dict[str, str | None]:
    """id -> the filter that rejected it (None: kept), by the in-memory rules."""
    failed: dict[str, str | None] = {g["id"]: None for g in gens}

    def alive():
        return [g for g in sorted(gens, key=lambda g: g["id"]) if failed[g["id"]] is None]

    def text(g):
        return (g.get("reasoning") or "") + "\n" + (g.get("content") or "")
    for i in duplicates(alive()):
        failed[i] = "dedup"
    by_prompt = defaultdict(list)
    for g in alive():
        by_prompt[g["prompt_id"]].append(g)
    dropped = near_duplicates({p: prompt_text(gs[0]["messages"]) for p, gs in by_prompt.items()},
                              threshold=fc.dedup_threshold, keep=lambda p: -len(by_prompt[p]))
    for g in alive():
        if g["prompt_id"] in dropped:
            failed[g["id"]] = "dedup"
    texts = {g["id"]: text(g) for g in alive()}
    for i in near_duplicates(texts, threshold=fc.dedup_threshold, keep=lambda i: len(texts[i])):
        failed[i] = "dedup"
    by_prompt = defaultdict(list)
    for g in alive():
        by_prompt[g["prompt_id"]].append(g)
    for gs in by_prompt.values():
        if fc.select == "shortest":
            gs.sort(key=lambda g: (len(text(g)), g["id"]))
            for g in gs[1:]:
                failed[g["id"]] = "select"
            gs = gs[:1]
        if fc.max_per_prompt is not None:
            for g in gs[fc.max_per_prompt:]:
                failed[g["id"]] = "select"
    return failed


@pytest.mark.parametrize("select, max_per_prompt", [("all", None), ("shortest", None), ("all", 2)])
def test_streaming_decisions_equal_the_in_memory_rules(tmp_path, monkeypatch, select, max_per_prompt):
    import distill.filters.stage as stage

    monkeypatch.setattr(stage, "BATCH", 7)            # decisions span many batches
    monkeypatch.setattr(stage, "PROMPT_CACHE", 3)     # prompts are signed again, harmlessly
    gens = _gens()
    random.Random(1).shuffle(gens)                    # disk order is not id order
    with Stage(tmp_path, "generate").writer() as w:
        for g in gens:
            w.write(g)
    cfg = load_recipe(recipe_path("smoke"), [
        "filter.verify=false", "filter.decontaminate=none", "filter.dedup=minhash",
        f"filter.select={select}", f"filter.max_per_prompt={max_per_prompt or 'null'}"])
    counts = run_filter(cfg, tmp_path)
    want = _reference(gens, cfg.filter)
    verdicts = {v["id"]: v for v in Stage(tmp_path, "filter").read()}
    assert {i: v["failed"] for i, v in verdicts.items()} == want
    kept = sorted(r["id"] for r in RunDir(tmp_path).dataset.read())
    assert kept == sorted(i for i, f in want.items() if f is None)
    assert counts["kept"] == len(kept) and counts["total"] == len(gens)
    # the planted copies were found, by each rule
    reasons = [v["reasons"].get("dedup", "") for v in verdicts.values()]
    assert any(r.startswith("duplicate of ") for r in reasons)
    assert any(r.startswith("near-duplicate prompt of p") for r in reasons)
    assert any(r.startswith("near-duplicate trace of ") for r in reasons)


def test_a_record_written_twice_is_one_trace(tmp_path):
    gens = _gens()[:8]
    with Stage(tmp_path, "generate").writer() as w:
        for g in gens + gens[:3]:
            w.write(g)
    cfg = load_recipe(recipe_path("smoke"), ["filter.verify=false", "filter.decontaminate=none"])
    counts = run_filter(cfg, tmp_path)
    verdicts = [v["id"] for v in Stage(tmp_path, "filter").read(unique=False)]
    assert counts["total"] == 8 and sorted(verdicts) == sorted(g["id"] for g in gens)


def test_the_kept_set_loads_as_a_hub_dataset(tmp_path):
    import datasets

    gens = _gens()[:12]
    with Stage(tmp_path, "generate").writer() as w:
        for g in gens:
            w.write(g)
    cfg = load_recipe(recipe_path("smoke"), ["filter.verify=false", "filter.decontaminate=none"])
    counts = run_filter(cfg, tmp_path)
    shards = sorted(p.name for p in (tmp_path / "dataset" / "data").iterdir())
    assert shards == ["train-00000-of-00001.parquet"]
    ds = datasets.load_dataset(str(tmp_path / "dataset"), split="train")
    assert len(ds) == counts["kept"] > 0
    assert ds[0]["messages"][-1]["role"] == "assistant" and \
        ds[0]["messages"][-1]["content"].startswith("<think>")


def test_word_hashes_split_words_as_re_does():
    """The numpy word splitter finds exactly `re`'s lower-cased \\w+ words (Unicode letters,
    digits, underscores, characters outside the BMP, lower-casing that changes a length), and
    a word's hash does not depend on where it stands."""
    import re

    import numpy as np

    from distill.minhash import word_hashes

    rng = random.Random(0)
    alphabet = "abcXYZ019_ \n\t.,;:!?-—“”’×÷≤αβγΩéüßİ中文字😀𝔸\u2028"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        words = re.findall(r"\w+", text.lower())
        alone = [int(word_hashes(w)[0]) for w in words]
        assert word_hashes(text).tolist() == alone, text
    many = {f"w{i}" for i in range(50_000)}
    assert len({int(word_hashes(w)[0]) for w in many}) == len(many)      # no collision
    assert word_hashes("").dtype == np.uint64 and len(word_hashes(" .. ")) == 0
