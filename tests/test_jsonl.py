"""User JSONL files (prompt sources, the filter's input, `distill score` samples, benchmark data
files): every reader names the file and line of a bad line, whether bad JSON or bad UTF-8, reads
a line holding U+2028 as one line, and forgives no torn last line; the run's own shards do."""

import json

import pytest

from distill.config import load_recipe, recipe_path
from distill.errors import InputError
from distill.eval.score import read_samples
from distill.filters.inputs import read_traces
from distill.grading.benchmarks import read_rows
from distill.prompts import run_prompts
from distill.records import read_jsonl


def _prompts(path):
    source = (f"prompts.sources=[{{name: mine, kind: jsonl, path: {path}, category: general, "
              "prompt_field: q, answer_field: null}]")
    return run_prompts(load_recipe(recipe_path("smoke"), [source]), path.parent / "run")["mine"]


READERS = {
    "prompts": _prompts,
    "filter input": lambda path: len(read_traces(str(path))),
    "score samples": lambda path: len(read_samples(path)),
    "benchmark data": lambda path: len(read_rows(str(path), "nowhere/on-the-hub")),
}
# U+2028 is legal unescaped in a JSON string; str.splitlines would cut the line there.
ROW = {"task_id": "t/0", "completion": "one\u2028two", "q": "one\u2028two?",
       "messages": [{"role": "user", "content": "1+1?\u2028"},
                    {"role": "assistant", "content": "\\boxed{2}\u0085"}]}
GOOD = (json.dumps(ROW, ensure_ascii=False) + "\n").encode()


@pytest.fixture(params=READERS)
def reader(request):
    return READERS[request.param]


def test_every_line_is_read_and_blank_lines_are_skipped(tmp_path, reader):
    path = tmp_path / "rows.jsonl"
    other = dict(ROW, task_id="t/1", q="three?")
    path.write_bytes(GOOD + b"\n  \r\n" + (json.dumps(other) + "\r\n").encode())
    assert reader(path) == 2


@pytest.mark.parametrize("bad, why", [(b'{"task_id": \n', "not valid JSON"),
                                      (b'{"q": "caf\xe9"}\n', "not valid UTF-8"),
                                      (b'{"task_id": "t/2"', "not valid JSON")])  # a torn tail
def test_a_bad_line_names_the_file_and_the_line(tmp_path, reader, bad, why):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(GOOD + b"\n" + bad)
    with pytest.raises(InputError) as e:
        reader(path)
    assert str(e.value).startswith(f"{path}:3: {why}")


def test_only_the_runs_own_shards_forgive_a_torn_tail(tmp_path):
    path = tmp_path / "part-00000.jsonl"
    path.write_bytes(GOOD + b'{"task_id": "t/2"')
    assert [r["task_id"] for r in read_jsonl(path)] == ["t/0"]


def test_a_bad_row_after_blank_lines_is_named_by_its_line(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_bytes(GOOD + b"\n\n" + json.dumps({"messages": [{"role": "user"}]}).encode())
    with pytest.raises(InputError) as e:
        read_traces(str(path))
    assert str(e.value).startswith(f"{path}:4: messages: the last message must be")
    path.write_bytes(GOOD + b"\n" + GOOD)
    assert [g["input_line"] for g in read_traces(str(path))] == [1, 3]


def test_big_integers_and_nan_read_as_json_reads_them(tmp_path):
    from distill.jsonl import numbered_rows
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 123456789012345678901234567890, "b": -9223372036854775809}\n'
                    '{"c": NaN, "d": "\\ud800"}\n{"e": 1.5, "f": "9999999999999999999"}\n')
    rows = [r for _, r in numbered_rows(path)]
    assert rows[0] == {"a": 123456789012345678901234567890, "b": -9223372036854775809}
    assert rows[1]["c"] != rows[1]["c"] and rows[1]["d"] == "\ud800"       # NaN, a lone surrogate
    assert rows[2] == {"e": 1.5, "f": "9999999999999999999"}
