"""Decontamination: reads the prompts of the benchmarks in evals/ (through the benchmark
registry) and finds training prompts that overlap them; returns, per contaminated prompt,
which benchmark item it hit and how. `PromptChecker.from_recipe` is the one check a recipe
asks for (`filter.decontaminate` and its settings): the prompts stage runs it on the prompts
it collects, before the teacher is paid for them, and the filter on the traces' prompts.

Two checks, as open-r1 and the dedup literature do them:
- n-gram: a prompt is contaminated when it shares a word n-gram (8 by default, open-r1's
  choice) with a benchmark item. Words are lower-cased `\\w+` runs, so spacing and punctuation
  do not hide a copy. N-grams found in `BOILERPLATE_ITEMS` or more items of one benchmark are
  its template ("Please reason step by step...", "Complete the following Python function"),
  not its content, and are ignored; an item shorter than n words is matched as a whole, in a
  prompt at most twice its length;
- MinHash: a prompt whose estimated Jaccard similarity (word 5-gram shingles) with an item is
  at least `threshold` (catches paraphrases with few long exact runs). Template shingles
  (in `BOILERPLATE_ITEMS` or more items of a benchmark) are left out on both sides, so two
  prompts of one template ("...returns x plus 90" and "...returns x plus 91") are not a hit.

A benchmark that is not on hand (no local file and no Hub access, or gated) is skipped and
named with the reason: the report says what was not checked. Data that is on hand but not in
a layout the benchmark's loader reads (a column missing), or a local file the recipe names
that is missing or broken, is bad input: an error naming the benchmark, never a silent skip.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from distill.minhash import Signer, lsh_index, shingle_hashes

BOILERPLATE_ITEMS = 5
MIN_SHINGLES = 3     # MinHash needs a few content shingles; shorter texts: the n-gram check
_WORD = re.compile(r"\w+")


@dataclass
class Hit:
    benchmark: str
    item: str          # the benchmark item's id
    method: str        # ngram | minhash
    evidence: str      # the shared n-gram, or the estimated Jaccard similarity

    def reason(self) -> str:
        return f"{self.method} overlap with {self.benchmark} (item {self.item}): {self.evidence}"


def prompt_text(messages: Sequence[Mapping[str, Any]], template_text: list[str] | tuple[str, ...] = ()) -> str:
    """What is compared: the user's (and system's) turns, not the answer, without the fixed
    text of the template that asked them (`template_text`, from `template_literals`): a
    recipe that asks as a benchmark asks ("Please reason step by step, and put your final
    answer within \\boxed{}.") shares that instruction with every benchmark item, and the
    last word of a problem plus the instruction's first seven is an 8-gram of the item, not
    contamination. Each fixed piece is replaced once by a line break, so words never join."""
    text = "\n".join(m.get("content") or "" for m in messages if m.get("role") != "assistant")
    for piece in template_text:
        text = text.replace(piece, "\n", 1)
    return text


def template_literals(template: str, style: str = "format") -> list[str]:
    """The fixed pieces of a prompt template that hold words, longest first: `format` for a
    recipe's str.format template (`{{` is a brace), `fill` for a benchmark's (evals/: only
    `{name}` is a field, other braces are text)."""
    if style == "format":
        import string
        pieces = [lit for lit, *_ in string.Formatter().parse(template)]
    else:
        pieces = re.split(r"\{\w+\}", template)
    return sorted({p.strip() for p in pieces if _WORD.search(p)}, key=len, reverse=True)


def load_benchmarks(names: list[str], data_files: dict[str, str]) -> tuple[dict, dict]:
    """(benchmark -> [(item id, prompt text)], benchmark -> why it was skipped)."""
    from distill.errors import InputError
    from distill.grading.benchmarks import DataNotOnHand, get_benchmark, hub_reachable, offline_mode

    items: dict[str, list[tuple[str, str]]] = {}
    skipped: dict[str, str] = {}
    online = hub_reachable()
    with contextlib.nullcontext() if online else offline_mode():
        for name in names:
            try:
                bench = get_benchmark(name)
            except KeyError as e:
                skipped[name] = str(e).strip("'\"")
                continue
            data = data_files.get(name)
            key = f"eval.data_files.{name}" if data else None
            try:
                problems = bench.load(data, None)
            except DataNotOnHand as e:  # no local file; the Hub unreachable, or gated
                skipped[name] = f"not on hand (no local file, and {e.message})"
                continue
            except InputError as e:     # a local file that is missing, or a bad line in it
                raise InputError(f"benchmark {name}: {e.message}", file=e.file or data,
                                 key=e.key or key, line=e.line) from None
            except (KeyError, TypeError, ValueError) as e:   # read, but not in its layout
                what = f"its rows have no column {e}" if isinstance(e, KeyError) else \
                    f"its rows do not read ({type(e).__name__}: {_first_line(e)})"
                raise InputError(f"benchmark {name}: {what}; the data is not in a layout "
                                 f"evals/{name}.py reads", file=data or bench.hub,
                                 key=key) from None
            except Exception as e:  # noqa: BLE001  (no local file, no Hub, gated: not on hand)
                where = "" if online or data else "no local file and the Hub is unreachable; "
                skipped[name] = f"not on hand ({where}{type(e).__name__}: {_first_line(e)})"
                continue
            fixed = template_literals(bench.prompt, "fill") if bench.prompt else []
            items[name] = [(str(p["id"]), prompt_text(p.get("messages") or [], fixed))
                           for p in problems]
    return items, skipped


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


class Index:
    """The benchmark items' n-grams and MinHash signatures, queried once per prompt."""

    def __init__(self, items: dict[str, list[tuple[str, str]]], *, ngram: int = 8,
                 minhash_threshold: float | None = 0.8):
        self.n = ngram
        self.ngrams: dict[tuple, tuple[str, str]] = {}
        self.short: dict[int, dict[tuple, tuple[str, str]]] = {}
        self.boilerplate = 0
        for bench, rows in items.items():
            per_item = [(item, self._words(text)) for item, text in rows]
            counts: Counter = Counter()
            for _, words in per_item:
                counts.update(set(self._grams(words)))
            for item, words in per_item:
                if len(words) < self.n:
                    if words:
                        self.short.setdefault(len(words), {}).setdefault(tuple(words), (bench, item))
                    continue
                for g in self._grams(words):
                    if counts[g] >= BOILERPLATE_ITEMS:
                        self.boilerplate += 1
                        continue
                    self.ngrams.setdefault(g, (bench, item))
        self.threshold: float = minhash_threshold or 0.0
        self.lsh: Any = None
        if minhash_threshold is not None:
            self._index_minhash(items)

    def _index_minhash(self, items: dict[str, list[tuple[str, str]]]) -> None:
        import numpy as np

        self.signer = Signer()
        self.lsh = lsh_index(self.threshold, self.signer.num_perm)
        self.sigs: dict[tuple[str, str], Any] = {}
        hashed = {b: [(item, np.unique(shingle_hashes(text))) for item, text in rows]
                  for b, rows in items.items()}
        common = []
        for rows in hashed.values():
            values, counts = np.unique(np.concatenate([h for _, h in rows] or [np.zeros(0, np.uint64)]),
                                       return_counts=True)
            common.append(values[counts >= BOILERPLATE_ITEMS])
        self.template_shingles = np.unique(np.concatenate(common or [np.zeros(0, np.uint64)]))
        for bench, rows in hashed.items():
            for item, hashes in rows:
                hashes = self._content(hashes)
                key = (bench, item)
                if key in self.sigs or len(hashes) < MIN_SHINGLES:
                    continue
                self.sigs[key] = self.signer.sign_hashes(hashes)
                self.lsh.insert(key, self.sigs[key], check_duplication=False)

    def _content(self, hashes):
        import numpy as np
        return hashes[~np.isin(hashes, self.template_shingles)]

    @staticmethod
    def _words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def _grams(self, words: list[str]):
        return (tuple(words[i:i + self.n]) for i in range(len(words) - self.n + 1))

    def check(self, text: str) -> Hit | None:
        """The first benchmark item the text overlaps, or None."""
        words = self._words(text)
        for g in self._grams(words):
            hit = self.ngrams.get(g)
            if hit:
                return Hit(hit[0], hit[1], "ngram", repr(" ".join(g)))
        for size, table in self.short.items():
            # An item shorter than n words ("25 29" of a toy sum) is a copy only when it is
            # most of the prompt; inside a long one it is a coincidence (two numbers of a test).
            if 2 * size < len(words):
                continue
            for i in range(len(words) - size + 1):
                hit = table.get(tuple(words[i:i + size]))
                if hit:
                    return Hit(hit[0], hit[1], "ngram", repr(" ".join(words[i:i + size])))
        if self.lsh is not None and words:
            import numpy as np

            hashes = self._content(np.unique(shingle_hashes(text)))
            if len(hashes) < MIN_SHINGLES:
                return None
            sig = self.signer.sign_hashes(hashes)
            best = None
            for key in self.lsh.query(sig):
                j = sig.jaccard(self.sigs[key])
                if j >= self.threshold and (best is None or j > best[0]):
                    best = (j, key)
            if best:
                return Hit(best[1][0], best[1][1], "minhash", f"jaccard {best[0]:.2f}")
        return None


@dataclass
class PromptChecker:
    """A recipe's decontamination check: the benchmarks of `filter.decontaminate` in one
    `Index` (built once: a few seconds for every benchmark in evals/), and the fixed text each
    prompt source asks with (its template's literals, the system prompt), left out of what is
    compared."""
    index: Index
    fixed: dict[str, list[str]]     # prompt source -> its fixed text
    checked: dict[str, int]         # benchmark -> items
    skipped: dict[str, str]         # benchmark -> why it was not checked
    ngram: int
    minhash_threshold: float | None

    @staticmethod
    def settings(cfg: Any) -> dict:
        """What decides the check: the benchmarks (`all`: every one in evals/), the local files
        the recipe gives them, the n-gram size and the MinHash threshold."""
        from distill.grading.benchmarks import list_benchmarks

        fc = cfg.filter
        names = [] if fc.decontaminate == "none" else \
            list_benchmarks() if fc.decontaminate == "all" else list(fc.decontaminate)
        files = dict(getattr(cfg.eval, "data_files", {}) or {})
        return {"benchmarks": names, "data_files": {n: files[n] for n in names if n in files},
                "ngram": fc.decontaminate_ngram, "minhash_threshold": fc.decontaminate_minhash}

    @classmethod
    def from_recipe(cls, cfg: Any) -> PromptChecker:
        s = cls.settings(cfg)
        system = [cfg.prompts.system_prompt.strip()] if cfg.prompts.system_prompt else []
        fixed = {src.name: template_literals(src.prompt_template) + system
                 for src in cfg.prompts.sources}
        items, skipped = load_benchmarks(s["benchmarks"], s["data_files"])
        index = Index(items, ngram=s["ngram"], minhash_threshold=s["minhash_threshold"])
        return cls(index, fixed, {b: len(v) for b, v in items.items()}, skipped, s["ngram"],
                   s["minhash_threshold"])

    def check(self, messages: Sequence[Mapping[str, Any]], source: str | None) -> Hit | None:
        """The first benchmark item the prompt (as `source` asked it) overlaps, or None."""
        return self.index.check(prompt_text(messages, self.fixed.get(source or "", [])))

    def summary(self, hits: Mapping[Any, Hit], sources: Mapping[Any, str] | None = None) -> dict:
        """The report: benchmarks checked (items each) and skipped (why), the settings, and
        each hit by prompt id (with its source, when `sources` gives them)."""
        def row(pid: Any, h: Hit) -> dict:
            return {"prompt_id": pid, **({"source": sources.get(pid)} if sources is not None else {}),
                    "benchmark": h.benchmark, "item": h.item, "method": h.method,
                    "evidence": h.evidence}
        return {"checked": dict(self.checked), "skipped": dict(self.skipped),
                "ngram": self.ngram, "minhash_threshold": self.minhash_threshold,
                "hits": [row(pid, h) for pid, h in sorted(hits.items(), key=lambda kv: str(kv[0]))]}
