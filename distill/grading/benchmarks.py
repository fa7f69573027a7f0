"""Benchmarks: a `Benchmark` per file in evals/, discovered by name; loaders read the Hub, a
local file or a local copy of a Hub dataset repo, and return problem dicts (id, source,
messages, verifier, answer / tests, entry_point, categories)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.config import EVALS_DIR, benchmark_names, close_match, unknown_name
from distill.errors import InputError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the complete function in a single ```python code block."


@dataclass
class Benchmark:
    """One benchmark, declared by its file in evals/.

    `load(data_file, limit, **options)` returns problem dicts: id, source, messages (the
    prompt), verifier (the filter stage's scorer: math, code, ...), its gold fields (answer,
    tests, entry_point, ...) and `categories`, a dict of this benchmark's category axes
    (`categories` below) to the question's value on each. `options` are the loader's knobs
    with their defaults (a LiveCodeBench release and date window, a shuffling seed), set per
    recipe under eval.benchmark.<name>.options."""
    name: str
    version: str                 # dataset release; `resolved_version` adds the file hash
    category: str                # reasoning | coding
    hub: str                     # Hub dataset id read when no local file is given
    load: Callable[..., list[dict]]   # (data_file, limit, **options) -> problems
    scorer: str = "math"         # verifier of its problems (distill.grading.verify)
    prompt: str = ""             # the template the loader fills in
    categories: tuple[str, ...] = ()   # per-question axes, e.g. ("subject", "level")
    options: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, tuple] = field(default_factory=dict)   # option -> the values it takes
    # Default sampling (open-r1 / lighteval conventions); a recipe may override any of them.
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768

    def resolved_version(self, data_file: str | None = None) -> str:
        """The version recorded with results: a local file or folder is pinned by its content
        hash."""
        if data_file is None:
            return self.version
        if not Path(data_file).exists():
            raise InputError(f"benchmark {self.name}: data file not found", file=str(data_file))
        return f"{self.version}+sha256.{file_sha256(data_file)[:16]}"

    def resolved_options(self, options: dict | None = None, key: str = "options") -> dict:
        """The loader's options: defaults, then `options`; an unknown name, or a value not
        among an option's `choices`, is bad input."""
        unknown = sorted(set(options or {}) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            close = close_match(unknown[0], sorted(self.options))
            hint = f"; did you mean {close!r}?" if close else ""
            raise InputError(f"unknown option {unknown[0]!r} for benchmark {self.name} "
                             f"(known: {known}){hint}", key=key)
        for name, value in (options or {}).items():
            if name in self.choices and value not in self.choices[name]:
                raise InputError(unknown_name(name, value, self.choices[name]),
                                 key=key if key.startswith("-") else f"{key}.{name}")
        return {**self.options, **(options or {})}

    def problems(self, data_file: str | None = None, limit: int | None = None,
                 options: dict | None = None, *, data_key: str | None = None) -> list[dict]:
        """The loaded problems, each checked to carry an id, a verifier and its categories.
        `data_key` is where the caller takes a local copy from (default: the recipe's
        eval.data_files.<name>), named when the Hub dataset cannot be read."""
        try:
            problems = self.load(data_file, limit, **self.resolved_options(options))
        except DataNotOnHand as e:
            raise InputError(e.for_benchmark(self.name, data_key or f"eval.data_files.{self.name}"),
                             file=e.file, key=e.key, line=e.line) from None
        seen: set[str] = set()
        for p in problems:
            if p["id"] in seen:
                raise ValueError(f"benchmark {self.name}: duplicate task id {p['id']!r}")
            seen.add(p["id"])
            p.setdefault("verifier", self.scorer)
            cats = p.setdefault("categories", {})
            missing = [a for a in self.categories if a not in cats]
            if missing:
                raise ValueError(f"benchmark {self.name}: task {p['id']!r} has no "
                                 f"{missing[0]!r} category")
        return problems

    def category_labels(self, problem: dict) -> list[str]:
        """The categories a question is scored in: the benchmark's own, then one per axis
        (`reasoning/subject=Algebra`, `reasoning/level=3`)."""
        cats = problem.get("categories") or {}
        return [self.category] + [f"{self.category}/{axis}={cats[axis]}"
                                  for axis in self.categories if cats.get(axis) is not None]


def get_benchmark(name: str) -> Benchmark:
    if not (EVALS_DIR / f"{name}.py").is_file():
        raise KeyError(unknown_name("benchmark", name, list_benchmarks()))
    bench = importlib.import_module(f"evals.{name}").BENCHMARK
    if bench.name != name:
        raise ValueError(f"evals/{name}.py declares benchmark {bench.name!r}")
    return bench


def list_benchmarks() -> list[str]:
    return benchmark_names()


def check_recipe_options(cfg) -> None:
    """eval.benchmark.<name>.options against each benchmark's loader (names and values), when
    the recipe loads rather than when the eval stage starts (importing only the benchmarks a
    recipe sets options for). The names themselves are checked by distill.config."""
    for name, settings in cfg.eval.benchmark.items():
        if settings.options:
            get_benchmark(name).resolved_options(settings.options,
                                                 key=f"eval.benchmark.{name}.options")


# ------------------------------------------------------------------ data not on hand

class DataNotOnHand(InputError):
    """A benchmark's Hub dataset that cannot be read here: the Hub is unreachable (offline, no
    network), the dataset is gated or missing, and the local cache has no copy. `problems`
    turns it into a line naming the benchmark and where a local copy can come from; the filter
    stage's decontamination skips the benchmark."""

    def __init__(self, hub: str, reason: str, remedy: str):
        super().__init__(f"the Hub dataset {hub} cannot be read ({reason})")
        self.hub, self.reason, self.remedy = hub, reason, remedy

    def for_benchmark(self, name: str, data_key: str) -> str:
        local = (f"point {data_key} at a local copy (a .jsonl / .json / .csv file, or a folder "
                 "laid out as the Hub repo)")
        return (f"benchmark {name}: no local data, and the Hub dataset {self.hub} cannot be "
                f"downloaded ({self.reason}); {local}"
                + (f", or {self.remedy}" if self.remedy else ""))


_TRUE = {"1", "ON", "YES", "TRUE"}   # huggingface_hub's reading of a boolean variable


def _offline_variable() -> str | None:
    return next((v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
                 if os.environ.get(v, "").upper() in _TRUE), None)


def _why_not_on_hand(e: BaseException) -> tuple[str, str] | None:
    """(reason, remedy) when `e`, or an error it came from, says the Hub could not be read;
    None for any other error (a bug, a bad local file), which stays as it is."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError)
    chain: list[BaseException] = []
    seen: BaseException | None = e
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(x, GatedRepoError) or (isinstance(x, DatasetNotFoundError)
                                             and "gated" in str(x)) for x in chain):
        return ("a gated dataset this machine has no access to",
                "accept its terms on huggingface.co and set HF_TOKEN")
    try:
        import httpx
        network: tuple = (ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                          httpx.TransportError)
    except ImportError:
        network = (ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled)
    if any(isinstance(x, network) for x in chain):
        variable = _offline_variable()
        if variable:
            return f"{variable} is set", f"unset {variable} to download it"
        return ("the Hub is unreachable",
                "run once where huggingface.co is reachable (the download is cached)")
    if any(isinstance(x, (DatasetNotFoundError, RepositoryNotFoundError)) for x in chain):
        return "no such dataset on the Hub, or no access to it", ""
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_mode():
    """Hub loads read the local cache only, failing at once instead of retrying for ~20 s."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def hub_access(hub: str):
    """Around a read of the Hub dataset `hub`: a Hub that cannot be read becomes DataNotOnHand
    (bad input: the data is not on hand), not a traceback from datasets or huggingface_hub.
    An unreachable Hub is read in offline mode (its cached copy, if any) without retries."""
    try:
        with contextlib.nullcontext() if hub_reachable() else offline_mode():
            yield
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001  (only the Hub's own failures are converted)
        why = _why_not_on_hand(e)
        if why is None:
            raise
        raise DataNotOnHand(hub, *why) from None


# ---------------------------------------------------------------------- shared by loaders

def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder: every file in it (hidden ones aside) with its
    relative path, in sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if not path.is_dir() else sorted(
        p for p in path.rglob("*") if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts))
    for f in files:
        if f != path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _load_dataset(name: str, config: str | None, split: str | None, revision: str | None):
    """`datasets.load_dataset` of a Hub id or a local copy of its repo (a folder with the
    README's `configs:` and the data files), the same call for both; `split=None` takes the
    only split there is (evalplus/mbppplus names it `train` or `test` by revision)."""
    from datasets import load_dataset

    from distill.errors import InputError
    data = load_dataset(name, config, split=split, revision=revision)
    if split is not None:
        return data
    if len(data) != 1:
        raise InputError(f"has several splits ({', '.join(data)}); name one", file=name)
    return next(iter(data.values()))


def read_rows(data_file: str | None, hub: str, *, split: str | None = "test",
              config: str | None = None, revision: str | None = None) -> list[dict]:
    """Rows of a local .jsonl / .jsonl.gz / .json / .csv file, of a local copy of a Hub
    dataset repo (a folder), or of the Hub dataset `hub` (at `revision` when given). A line
    that is not JSON is bad input naming file and line."""
    from distill.errors import InputError
    from distill.jsonl import numbered_rows

    if data_file is None:
        with hub_access(hub):
            return list(_load_dataset(hub, config, split, revision))
    path = Path(data_file)
    if path.is_dir():
        return list(_load_dataset(str(path), config, split, None))
    if not path.is_file():
        raise InputError("benchmark data file not found", file=str(path))
    name = path.name.removesuffix(".gz")
    if not name.endswith((".csv", ".json")):
        return [row for _, row in numbered_rows(path)]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        if name.endswith(".csv"):
            import csv
            return list(csv.DictReader(f))
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg})", file=str(path), line=e.lineno) from None


def field_of(row: dict, *names: str, file: str | None = None):
    """The first of `names` the row has (mirrors of a dataset spell columns differently)."""
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    from distill.errors import InputError
    raise InputError(f"row has none of the columns {', '.join(names)}", file=file)


def fill(template: str, **fields: str) -> str:
    """`template` with each `{name}` replaced; unlike str.format, other braces (LaTeX's
    `\\boxed{}`, code in a prompt) stay as they are."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]
