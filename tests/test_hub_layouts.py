"""Local copies of Hub dataset repos for a rehearsal: each folder loads with
`datasets.load_dataset` as the Hub repo does and through the project's loaders (prompt
sources, benchmark files), and the answer key's answers pass the project's verifier on every
row (code in the sandbox)."""

import base64
import json
import pickle
import shutil
import zlib
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.grading.benchmarks import get_benchmark
from distill.grading.verify import verify_many
from distill.config import recipe_path
from distill.prompts import run_prompts
from distill.records import RunDir
from distill.rehearse import hub_layouts as hl

DATA = Path(__file__).parents[1].parent / "shared" / "data"
pytestmark = [
    pytest.mark.skipif(not (DATA / "evalplus").is_dir(), reason=f"data not found at {DATA}"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
]
N = 3


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    import datasets
    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = str(tmp_path_factory.mktemp("hf-cache"))
    try:
        yield hl.build_hub_copies(tmp_path_factory.mktemp("hub"), DATA, N)
    finally:
        datasets.config.HF_DATASETS_CACHE = saved


@pytest.fixture(scope="module")
def key(copies):
    return hl.answer_key(copies)


def _answer(entry: dict, problem: dict) -> str:
    """What a teacher stand-in that knows the key writes."""
    if entry["kind"] == "math":
        return f"<think>known</think>The answer is \\boxed{{{entry['answer']}}}."
    if entry["kind"] == "choice":
        return f"Answer: {'ABCD'[problem['choices'].index(entry['answer'])]}"
    return f"```python\n{entry['answer']}\n```"


def _grade(key: list[dict], problems: list[dict]) -> list[str]:
    items = []
    for p in problems:
        entry = hl.lookup(key, p["messages"][-1]["content"])
        assert entry is not None, p["messages"][-1]["content"][:200]
        items.append((p, _answer(entry, p)))
    return [v.reason for v in verify_many(items, workers=2)]


def _source(recipe: str, name: str, **update):
    cfg = load_recipe(recipe_path(recipe))
    src = next(s for s in cfg.prompts.sources if s.name == name)
    cfg.prompts.sources = [src.model_copy(update=update)]
    return cfg


def _rows(folder: Path, split: str, config: str = "full") -> list[dict]:
    import datasets
    return list(datasets.load_dataset(str(folder), config, split=split))


def test_every_folder_loads_as_the_hub_repo_does(copies):
    import datasets
    assert set(copies) == {hl.NUMINA, hl.MBPP, hl.MBPP_PLUS, hl.HUMANEVAL_PLUS,
                           hl.LIVECODEBENCH, hl.GPQA}
    sizes = {(hl.NUMINA, "default", "train"): 2 + len(hl.NUMINA_EDGE_ROWS) + N,
             (hl.MBPP, "sanitized", "train"): 120, (hl.MBPP, "sanitized", "test"): 257,
             (hl.MBPP, "sanitized", "validation"): 43, (hl.MBPP, "sanitized", "prompt"): 7,
             (hl.MBPP, "full", "train"): 374, (hl.MBPP, "full", "test"): 500,
             (hl.MBPP, "full", "validation"): 90, (hl.MBPP, "full", "prompt"): 10,
             (hl.MBPP_PLUS, "default", "test"): N, (hl.HUMANEVAL_PLUS, "default", "test"): N,
             (hl.LIVECODEBENCH, "release_v5", "test"): 6, (hl.LIVECODEBENCH, "v6", "test"): 1,
             (hl.GPQA, "gpqa_diamond", "train"): len(hl.GPQA_MADE)}
    for (hub_id, config, split), size in sizes.items():
        ds = datasets.load_dataset(str(copies[hub_id]), config, split=split)
        assert ds.num_rows == size, (hub_id, split)
    mbpp = datasets.load_dataset(str(copies[hl.MBPP]), "sanitized", split="train")
    assert mbpp.features["task_id"].dtype == "int32" and mbpp[0]["task_id"] == 602
    numina = datasets.load_dataset(str(copies[hl.NUMINA]), split="train")
    assert list(numina.features) == list(hl.NUMINA_FEATURES)
    assert numina[0]["answer"] == "proof" and numina[-1]["source"] == "gsm8k-converted"
    plus = datasets.load_dataset(str(copies[hl.MBPP_PLUS]), split="test")
    assert plus.features["task_id"].dtype == "int64" and "canonical_solution" not in plus.features
    gpqa = datasets.load_dataset(str(copies[hl.GPQA]), "gpqa_diamond", split="train")
    assert gpqa.features["Expert Validator Accuracy"].dtype == "float64"
    for folder in copies.values():
        assert (folder / "SOURCE.md").is_file() and "configs:" in (folder / "README.md").read_text()
    for hub_id in (hl.NUMINA, hl.LIVECODEBENCH, hl.GPQA):
        assert "MADE HERE" in (copies[hub_id] / "SOURCE.md").read_text()


def test_livecodebench_private_tests_are_encoded_as_the_hub_encodes_them(copies):
    rows = [json.loads(line) for name in hl.LCB_FILES
            for line in (copies[hl.LIVECODEBENCH] / name).read_text().splitlines()]
    real = json.loads((DATA / "schemas" / "livecodebench-code_generation_lite"
                       / "test.sample.jsonl").read_text())
    assert rows[0] == real
    # The real row's blob re-encodes to itself: same pickle protocol, same zlib level.
    text = pickle.loads(zlib.decompress(base64.b64decode(real["private_test_cases"])))
    assert hl._private(json.loads(text)) == real["private_test_cases"]
    for row in rows[1:]:
        assert all(isinstance(row[c], str) for c in hl.LCB_COLUMNS)
        assert json.loads(pickle.loads(zlib.decompress(base64.b64decode(row["private_test_cases"]))))
        meta = json.loads(row["metadata"])
        assert ("class Solution" in row["starter_code"]) == ("func_name" in meta)


def test_prompt_sources_read_the_copies_and_the_key_answers_them(copies, key, tmp_path):
    # NuminaMath through the recipe's own source: `where` and the gold check leave out the
    # real proof rows and the edge rows; the converted GSM8K rows are asked and answered.
    cfg = _source("r1-to-7b", "numina_math", path=str(copies[hl.NUMINA]))
    assert run_prompts(cfg, tmp_path / "numina") == {"numina_math": N}
    stage = RunDir(tmp_path / "numina").stage("prompts")
    assert stage.manifest()["skipped"] == {"numina_math": {"empty": 1, "notfound": 1,
                                                           "proof": 2, "unparsable": 1}}
    assert stage.manifest()["excluded"] == {"numina_math": 3}
    assert _grade(key, list(stage.read())) == ["ok"] * N
    # MBPP through the recipe's source (the full config, its setup code before the asserts):
    # every row's answer passes its tests. The test split is graded on the benchmark's path.
    for split, size in (("train", 374), ("validation", 90), ("prompt", 10)):
        cfg = _source("r1-to-7b", "mbpp_train", path=str(copies[hl.MBPP]), split=split)
        assert run_prompts(cfg, tmp_path / split) == {"mbpp_train": size}
        assert _grade(key, list(RunDir(tmp_path / split).stage("prompts").read())) == ["ok"] * size


@pytest.mark.parametrize("name, hub_id, size, options", [
    ("mbpp", hl.MBPP, 257, None),
    ("mbpp_plus", hl.MBPP_PLUS, N, None),
    ("humaneval_plus", hl.HUMANEVAL_PLUS, N, None),
    ("livecodebench", hl.LIVECODEBENCH, 7, {"release": "release_v6"}),
    ("gpqa_diamond", hl.GPQA, len(hl.GPQA_MADE), None),
])
def test_benchmarks_read_the_copies_and_the_key_answers_every_row(copies, key, name, hub_id,
                                                                  size, options):
    problems = get_benchmark(name).problems(str(copies[hub_id]), options=options)
    assert len(problems) == size
    assert _grade(key, problems) == ["ok"] * size


def test_the_recipes_livecodebench_window_holds_stdin_and_functional_rows(copies):
    window = get_benchmark("livecodebench").problems(str(copies[hl.LIVECODEBENCH]), options={
        "release": "release_v5", "start_date": "2024-08-01", "end_date": "2025-01-31"})
    assert sorted(p["task_id"] for p in window) == ["made03_b", "made04", "made05_c"]
    assert any(p.get("functional_tests") for p in window) and any(p.get("stdio_tests") for p in window)


def test_lookup_takes_the_most_specific_entry(copies, key):
    (plus,) = [p for p in get_benchmark("mbpp_plus").problems(str(copies[hl.MBPP_PLUS]))
               if p["task_id"] == "Mbpp/2"]
    text = plus["messages"][-1]["content"]
    both = [e for e in key if e["match"] in text]
    assert {e["dataset"] for e in both} == {hl.MBPP, hl.MBPP_PLUS}   # MBPP's first test too
    assert hl.lookup(key, text)["dataset"] == hl.MBPP_PLUS
    assert hl.lookup(key, "nothing of the sort") is None
