"""Refresh: new prompts from new rows or a new revision of a source, the teacher asked only for
them, re-filtering, and the retrain decision against the recipe's thresholds."""

import json

import pytest

from distill.config import RefreshConfig, load_recipe
from distill.config import recipe_path
from distill.pipeline import run_stage
from distill.prompts import run_prompts
from distill.records import RunDir, Stage, write_json
from distill.refresh import decide, run_refresh


# ------------------------------------------------------------------ the decision

@pytest.mark.parametrize("trained,count,kept,rc,expected", [
    (None, None, {"a"}, {}, (True, 0)),                              # no student yet
    ({"a", "b"}, 2, {"a", "b"}, {}, (False, None)),                  # nothing new
    ({"a", "b"}, 2, {"a", "b", "c"}, {}, (True, None)),              # one new, min_new_kept 1
    ({"a", "b"}, 2, {"a", "b", "c"}, {"min_new_kept": 2}, (False, None)),
    ({"a", "b"}, 2, {"a", "b", "c"}, {"min_growth": 0.6}, (False, None)),  # +50% < 60%
    ({"a", "b"}, 2, {"a", "b", "c", "d"}, {"min_growth": 0.6, "min_new_kept": 2}, (True, None)),
    ({"a", "b"}, 2, {"a"}, {}, (True, 1)),                           # a trained trace is gone
    ({"a", "b"}, 2, {"a"}, {"retrain_on_removal": False}, (False, None)),
    (None, 2, {"a", "b", "c"}, {"min_new_kept": 1}, (True, None)),   # ids unknown: counts
])
def test_retrain_decision(trained, count, kept, rc, expected):
    retrain, why, added, removed = decide(RefreshConfig(**rc), trained, count, kept)
    assert retrain is expected[0], why
    if expected[1] is not None:
        assert ("no trained student" in why) if expected[1] == 0 else (removed == expected[1])


# ------------------------------------------------------------------ new rows, new revisions

def _jsonl_cfg(path, *extra):
    src = (f"prompts.sources=[{{name: mine, kind: jsonl, path: {path}, category: reasoning, "
           "prompt_field: q, answer_field: a}]")
    return load_recipe(recipe_path("smoke"), [src, *extra])


def _rows(n, start=0):
    return "".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) + "\n"
                   for i in range(start, start + n))


def test_unchanged_source_is_not_read_and_new_rows_are_added(tmp_path, monkeypatch):
    import distill.prompts as prompts

    data = tmp_path / "p.jsonl"
    data.write_text(_rows(3))
    cfg = _jsonl_cfg(data)
    run_prompts(cfg, tmp_path / "run")
    first = Stage(tmp_path / "run", "prompts").manifest()
    assert first["new"] == {"mine": 3} and first["revisions"]["mine"].startswith("sha256-")

    def not_read(src):
        raise AssertionError("an unchanged source was read again")
    monkeypatch.setattr(prompts, "_jsonl_rows", not_read)
    assert run_prompts(cfg, tmp_path / "run") == {"mine": 3}
    assert Stage(tmp_path / "run", "prompts").manifest()["new"] == {"mine": 0}
    monkeypatch.undo()

    data.write_text(_rows(5))  # two new rows: a new revision of the file
    run_prompts(cfg, tmp_path / "run")
    manifest = Stage(tmp_path / "run", "prompts").manifest()
    assert manifest["new"] == {"mine": 2} and manifest["revisions"] != first["revisions"]
    recs = list(RunDir(tmp_path / "run").stage("prompts").read())
    assert len(recs) == 5 and {r["source_revision"] for r in recs[3:]} == {manifest["revisions"]["mine"]}


def test_a_new_revision_of_a_local_dataset_folder_adds_its_rows(tmp_path, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "ds"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "part-0.jsonl").write_text(_rows(4))
    src = (f"prompts.sources=[{{name: ds, kind: hf, path: {folder}, category: reasoning, "
           "prompt_field: q, answer_field: a}]")
    cfg = load_recipe(recipe_path("smoke"), [src])
    assert run_prompts(cfg, tmp_path / "run") == {"ds": 4}
    (folder / "data" / "part-1.jsonl").write_text(_rows(3, start=4))
    assert run_prompts(cfg, tmp_path / "run") == {"ds": 7}
    assert Stage(tmp_path / "run", "prompts").manifest()["new"] == {"ds": 3}


# ------------------------------------------------------------------ a refresh on the toy teacher

ARITH = "prompts.sources=[{name: toy_arith, kind: toy, family: arith, category: reasoning, count: %d}]"


def _cfg(count, *extra):
    return load_recipe(recipe_path("smoke"), [ARITH % count, *extra])


def _finish_training(run_dir, cfg):
    """What a finished train, evaluate and publish leave behind (manifests and the train
    stage's lineage), so the refresh sees a trained, evaluated student; the slow Prefect test
    trains for real."""
    from distill.train.stage import records_hash
    records = list(RunDir(run_dir).dataset.read())
    write_json(run_dir / "train" / "lineage.json", {"dataset_hash": records_hash(records)})
    Stage(run_dir, "train").complete(records=len(records), config_hash="c1")
    Stage(run_dir, "eval").complete(benchmarks=cfg.eval.benchmarks)
    Stage(run_dir, "publish").complete()


def test_refresh_asks_the_teacher_only_for_new_prompts(tmp_path):
    run_dir = tmp_path / "run"
    ran = []

    def run(cfg):
        def stage(name):
            ran.append(name)
            if name in ("prompts", "generate", "filter"):  # real; the rest is recorded
                run_stage(name, cfg, run_dir)
        return stage

    cfg = _cfg(16)
    first = run_refresh(cfg, run_dir, run=run(cfg))
    assert ran == ["prompts", "generate", "filter", "train", "quantize", "evaluate", "publish"]
    assert first["new_prompts"] == 16 and first["teacher_requests"] == 16
    assert first["retrained"] and first["reason"] == "no trained student yet"
    kept = first["kept_after"]
    assert kept >= 12  # the trained toy teacher gets most of its sums right
    _finish_training(run_dir, cfg)

    ran.clear()
    before = {r["id"] for r in Stage(run_dir, "prompts").read()}
    cfg = _cfg(20, "refresh.min_new_kept=100")
    second = run_refresh(cfg, run_dir, run=run(cfg))
    new_ids = {r["id"] for r in Stage(run_dir, "prompts").read()} - before
    asked = {g["prompt_id"] for g in Stage(run_dir, "generate").read()
             if g["prompt_id"] in new_ids}
    assert second["new_prompts"] == 4 and len(new_ids) == 4
    assert second["teacher_requests"] == 4 and second["new_samples"] == 4 and asked == new_ids
    assert ran == ["prompts", "generate", "filter"] and not second["retrained"]
    assert "below refresh.min_new_kept 100" in second["reason"]
    assert second["kept_before"] == kept and second["new_kept"] == second["kept_after"] - kept
    assert json.loads((run_dir / "refresh" / "trained.json").read_text())["config_hash"] == "c1"

    ran.clear()
    third = run_refresh(cfg, run_dir, run=run(cfg))  # nothing new anywhere
    assert (third["new_prompts"], third["teacher_requests"]) == (0, 0) and ran == ["prompts", "generate", "filter"]
    # What the student has not seen adds up over refreshes until it passes the threshold.
    assert third["new_kept"] == second["new_kept"] and not third["retrained"]
    assert Stage(run_dir, "generate").manifest()["new_samples"] == 0
    history = list(Stage(run_dir, "refresh").read())
    assert [h["new_prompts"] for h in history] == [16, 4, 0]
    report = (run_dir / "refresh" / "report.md").read_text()
    assert "Last refresh: 0 new prompts" in report and report.count("| no |") == 2
