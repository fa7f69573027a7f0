"""Run-directory records: stable ids, torn tails, duplicates, completion markers."""

import json

import pytest

from distill.errors import InputError
from distill.records import RunDir, record_id


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
    shard = stage.path / "part-00000.jsonl"
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
