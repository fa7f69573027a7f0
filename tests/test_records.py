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
