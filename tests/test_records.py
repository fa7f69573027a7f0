"""Run-directory records: stable ids, torn tails, duplicates, completion markers; the run
directory's contract: a folder accessor per stage, handles without side effects, the current
traces, a missing input as bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import InputError
from distill.records import RunDir, current_traces, record_id


def test_record_id_is_stable_and_distinguishes_parts():
    assert record_id("a", 1, "h") == record_id("a", 1, "h")
    assert record_id("a", 1, "h") != record_id("a", 2, "h")
    assert len(record_id("x")) == 16


def test_writer_appends_new_shards_and_reader_dedups(tmp_path):
    stage = RunDir(tmp_path).stage("gen")
    with stage.writer() as w:
        w.write({"id": "a", "v": 1})
        w.write({"id": "b", "v": 2})
    with stage.writer() as w:
        w.write({"id": "a", "v": 3})  # a duplicate from a racing re-run: first one wins
        w.write({"id": "c", "v": 4})
    assert len(stage.shards()) == 2
    assert [(r["id"], r["v"]) for r in stage.read()] == [("a", 1), ("b", 2), ("c", 4)]
    assert stage.ids() == {"a", "b", "c"}


def test_torn_tail_is_skipped_but_corruption_inside_is_an_error(tmp_path):
    stage = RunDir(tmp_path).stage("gen")
    shard = stage.mkdir() / "part-00000.jsonl"
    shard.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "te')
    assert [r["id"] for r in stage.read()] == ["a"]
    shard.write_text('{"id": "a"\n' + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(InputError, match=r"part-00000.jsonl:1: not valid JSON"):
        list(stage.read())


def test_marker_is_written_last_and_removed_on_start(tmp_path):
    stage = RunDir(tmp_path).stage("gen")
    assert not stage.is_complete()
    with stage.writer() as w:
        w.write({"id": "a"})
    stage.complete(note="x")
    assert stage.is_complete() and stage.manifest() == {"note": "x", "records": 1}
    stage.start()
    assert not stage.is_complete()


def test_empty_writer_leaves_no_shard(tmp_path):
    stage = RunDir(tmp_path).stage("gen")
    with stage.writer():
        pass
    assert stage.shards() == []


def _indexed_stage(tmp_path, n=6):
    stage = RunDir(tmp_path).stage("generate")
    with stage.writer(index=("prompt_id", "cost")) as w:
        for i in range(n):
            w.write({"id": f"s{i}", "prompt_id": f"p{i // 2}", "cost": i / 10,
                     "reasoning": "long trace " * 50 + str(i)})
    return stage, stage.shards()[0]


def test_index_gives_the_fields_of_every_record_without_parsing_them(tmp_path):
    stage, shard = _indexed_stage(tmp_path)
    assert (shard.parent / (shard.name + ".idx")).exists() and len(stage.shards()) == 1
    want = [{"id": r["id"], "prompt_id": r["prompt_id"], "cost": r["cost"]} for r in stage.read()]
    assert list(stage.read_index(("prompt_id", "cost"))) == want and len(want) == 6
    assert stage.ids() == {f"s{i}" for i in range(6)}
    # Indexed records are not parsed: garble one (same length, no newline) and only the full
    # read notices.
    data = shard.read_bytes()
    shard.write_bytes(data.replace(b'"s0"', b'"s0!', 1))
    assert list(stage.read_index(("prompt_id", "cost"))) == want
    with pytest.raises(InputError, match=r"part-00000.jsonl:1: not valid JSON"):
        list(stage.read())


def test_index_behind_or_ahead_of_the_records_after_a_crash(tmp_path):
    stage, shard = _indexed_stage(tmp_path)
    idx = shard.parent / (shard.name + ".idx")
    fields = ("prompt_id", "cost")
    # Killed between a record and its index entry: the unindexed records are read from the shard.
    lines = idx.read_text().splitlines(keepends=True)
    idx.write_text("".join(lines[:3]) + lines[3][:10])          # and a torn index line
    assert [r["id"] for r in stage.read_index(fields)] == [f"s{i}" for i in range(6)]
    assert list(stage.read_index(fields))[5] == {"id": "s5", "prompt_id": "p2", "cost": 0.5}
    # The index ahead of the data (a power loss kept the index's pages, not the shard's):
    # only records on disk count, and a torn last record is skipped.
    idx.write_text("".join(lines))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40])
    assert [r["id"] for r in stage.read_index(fields)] == [r["id"] for r in stage.read()] == \
        [f"s{i}" for i in range(5)]
    # Asked for a field the index does not hold: the shard is read whole.
    assert [r["prompt_id"] for r in stage.read_index(("prompt_id", "reasoning"))][:2] == ["p0", "p0"]
    assert list(stage.read_index(("reasoning",)))[0]["reasoning"].endswith("0")


def test_a_shard_without_records_leaves_no_index(tmp_path):
    stage = RunDir(tmp_path).stage("generate")
    with stage.writer(index=("prompt_id",)):
        pass
    assert list(stage.path.iterdir()) == []


def test_a_bad_record_past_the_index_is_named_by_its_line(tmp_path):
    stage, shard = _indexed_stage(tmp_path, n=3)
    idx = shard.parent / (shard.name + ".idx")
    idx.write_text("".join(idx.read_text().splitlines(keepends=True)[:1]))   # s0 indexed only
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(lines[0] + b"\n" + lines[1] + b'{"id": "s2", oops}\n')
    with pytest.raises(InputError, match=r"part-00000.jsonl:4: not valid JSON"):
        list(stage.read_index(("prompt_id",)))


# ------------------------------------------------------------------ the run directory contract

def test_each_stage_folder_has_an_accessor_and_one_stage_writes_it(tmp_path):
    from distill.pipeline import STAGES, stage_function
    from distill.records import FOLDER_STAGE, STAGE_FOLDERS, Stage

    assert list(STAGE_FOLDERS) == list(STAGES)          # every stage, in pipeline order
    assert STAGE_FOLDERS["evaluate"] == ("eval",) and STAGE_FOLDERS["filter"] == ("filter", "dataset")
    assert stage_function("generate") is STAGES["generate"] and callable(STAGES["publish"])
    rd = RunDir(tmp_path)
    for stage, folders in STAGE_FOLDERS.items():
        for folder in folders:
            assert FOLDER_STAGE[folder] == stage
            handle = getattr(rd, folder)
            path = handle if isinstance(handle, Path) else handle.path
            assert path == tmp_path / folder
            if folder != "report":
                assert isinstance(handle, Stage)
    assert rd.verify_store.path == tmp_path / "filter" / "verdicts"
    assert rd.refresh.path == tmp_path / "refresh" and rd.rehearsal == tmp_path / "rehearsal"


def test_handles_touch_nothing_on_disk(tmp_path):
    run = tmp_path / "run"
    rd = RunDir(run)
    for name in ("prompts", "generate", "filter", "verify_store", "dataset", "train", "quantize", "eval",
                 "publish", "refresh"):
        stage = getattr(rd, name)
        assert stage.shards() == [] and list(stage.read()) == [] and stage.ids() == set()
        assert stage.manifest() is None and not stage.is_complete()
        stage.start()
    assert rd.report == run / "report" and not rd.done("train")
    assert list(current_traces(run, "h")) == []
    with pytest.raises(InputError):
        rd.require("prompts")
    assert not run.exists()
    with rd.generate.writer() as w:                   # writing creates the folder
        w.write({"id": "a"})
    assert [p.name for p in run.iterdir()] == ["generate"]


def _two_generations(run):
    """Prompts p1 and p2; traces of settings h1 and h0, of a prompt no longer in the set, and
    one without a gen_hash (written by hand)."""
    rd = RunDir(run)
    with rd.prompts.writer() as w:
        for p in ("p1", "p2"):
            w.write({"id": p, "messages": [{"role": "user", "content": p}]})
    rd.prompts.complete()
    traces = [("t1", "p1", "h1"), ("t2", "p2", "h1"), ("t3", "p1", "h0"), ("t4", "p2", "h0"),
              ("t5", "gone", "h1"), ("t6", "p2", None)]
    with rd.generate.writer(index=("prompt_id", "gen_hash", "cost", "finish_reason")) as w:
        for tid, pid, gen_hash in traces:
            rec = {"id": tid, "prompt_id": pid, "cost": 1.0, "latency_s": 1.0,
                   "usage": {"prompt_tokens": 10, "completion_tokens": 20, "choices": 1}}
            w.write(rec if gen_hash is None else {**rec, "gen_hash": gen_hash})
    rd.generate.complete(gen_hash="h1")


def test_current_traces_are_those_of_the_generation_hash_and_the_prompt_set(tmp_path):
    _two_generations(tmp_path)
    traces = current_traces(tmp_path, "h1")
    assert [r["id"] for r in traces] == ["t1", "t2", "t6"] and traces.other == 3
    assert [r["id"] for r in current_traces(tmp_path, "h0")] == ["t3", "t4", "t6"]
    # From the shards' indexes: the same records, with only the fields asked for.
    keys = list(current_traces(tmp_path, "h1", fields=("cost",)))
    assert [k["id"] for k in keys] == ["t1", "t2", "t6"] and set(keys[0]) == \
        {"id", "prompt_id", "gen_hash", "cost"}
    # Another prompt set (generate's shard of the prompts), any settings.
    assert [r["id"] for r in current_traces(tmp_path, "h1", prompt_ids={"p1"})] == ["t1"]
    assert [r["id"] for r in current_traces(tmp_path, None)] == ["t1", "t2", "t3", "t4", "t6"]


def test_every_reader_of_the_traces_counts_the_same_ones(tmp_path):
    from types import SimpleNamespace

    from distill.filters.stage import _source
    from distill.plan.cost import recorded_usage
    from distill.publish.lineage import generation_cost

    _two_generations(tmp_path)
    cfg = SimpleNamespace(generation_hash=lambda: "h1", filter=SimpleNamespace(input=None))
    read, other, _ = _source(cfg, tmp_path)
    assert [g["id"] for g in read()] == ["t1", "t2", "t6"] and other() == 3
    assert recorded_usage(tmp_path, "h1").samples == 3
    assert generation_cost(tmp_path)["samples"] == 3            # the manifest's gen_hash


def test_require_names_the_folder_and_the_command_that_writes_it(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(InputError, match=r"prompts: prompts/ holds no records: "
                                         r"run the prompts stage first \(`distill prompts`\)"):
        rd.require("prompts")
    with pytest.raises(InputError, match=r"dataset: dataset/ is not complete \(no _SUCCESS marker\): "
                                         r"run the filter stage first \(`distill filter`\)"):
        rd.require("dataset", complete=True)
    with pytest.raises(InputError, match=r"eval: eval/ is not complete .*: run the evaluate stage first"):
        rd.require("eval", complete=True)
    with rd.dataset.writer() as w:
        w.write({"id": "a", "messages": [{"role": "user", "content": "hi"}]})
    assert rd.require("dataset").path == tmp_path / "dataset"   # records, no marker
    rd.dataset.complete()
    assert rd.require("dataset", complete=True).is_complete()


@pytest.mark.parametrize("stage, folder, command", [("generate", "prompts", "distill prompts"),
                                                    ("filter", "generate", "distill generate"),
                                                    ("train", "dataset", "distill filter")])
def test_a_stage_without_its_input_is_bad_input_from_the_cli(tmp_path, stage, folder, command):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "distill.cli", stage, "smoke", "--run-dir", str(run)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{run / folder}: " in r.stderr and f"first (`{command}`)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
