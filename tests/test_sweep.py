"""Sweeps without training: the plan (variants, the stages they share, donors, bad input), the
run directories it prepares, the step graph and its executor, answers seeded from a donor, and
the nested training subsets of a data-size axis. The end-to-end sweep through a real Prefect
server is in test_prefect.py (slow)."""

import json
import threading
import time
from pathlib import Path

import pytest

from distill.errors import InputError
from distill.pipeline import lock_root
from distill.records import RunDir
from distill.sweep.plan import first_stage, parse_over, plan_sweep, prepare
from distill.sweep.run import execute, raise_failures, seed_answers, steps

GRID = ["train.max_examples=100,200", "train.student=toy:student,org/student-l"]


def test_over_values_are_read_as_yaml_and_commas_inside_brackets_stay():
    assert parse_over(["train.max_examples=100,200", "filter.decontaminate=[gsm8k,math500],none",
                       "teacher.model=toy:teacher"]) == {
        "train.max_examples": [100, 200], "filter.decontaminate": [["gsm8k", "math500"], "none"],
        "teacher.model": ["toy:teacher"]}
    with pytest.raises(InputError, match="must look like key.path=value1,value2"):
        parse_over(["train.max_examples"])
    with pytest.raises(InputError, match="swept twice"):
        parse_over(["train.epochs=1", "train.epochs=2"])


def test_each_key_first_matters_to_its_stage():
    assert [first_stage(k) for k in ["prompts.sources.0.count", "teacher.model", "generate.temperature",
                                     "filter.verify", "filter.decontaminate", "train.student",
                                     "eval.temperature", "eval.benchmarks", "publish.license",
                                     "quantize.gguf"]] == \
        ["prompts", "generate", "generate", "filter", "prompts", "train", "evaluate", "prompts",
         "publish", "quantize"]
    with pytest.raises(InputError, match="no recipe section 'trian'"):
        first_stage("trian.epochs")


def test_a_grid_shares_everything_up_to_train_and_the_teacher_answers(tmp_path):
    plan = plan_sweep("smoke", GRID, tmp_path / "sw")
    names = [v.name for v in plan.variants]
    assert names == ["train.max_examples=100,train.student=toy:student",
                     "train.max_examples=100,train.student=org/student-l",
                     "train.max_examples=200,train.student=toy:student",
                     "train.max_examples=200,train.student=org/student-l"]
    first = names[0]
    for v in plan.variants:
        assert [v.shares[s] for s in ("prompts", "generate", "filter")] == [first] * 3
        assert v.runs("train") and v.runs("evaluate") and v.runs("publish")
        assert v.cfg.train.max_examples == v.values["train.max_examples"]
    # The base student's answers differ by student; the data size changes neither.
    assert [v.donor for v in plan.variants] == [names[0], names[1], names[0], names[1]]
    assert plan.reference == first
    graph = {(s.variant.name, s.stage): s for s in steps(plan)}
    assert len(graph) == 3 + 4 * 4          # shared prompts/generate/filter; train, quantize,
    assert graph[(names[3], "train")].after == ((first, "filter"),)   # evaluate, publish each
    assert graph[(names[3], "quantize")].after == ((names[3], "train"),)
    assert graph[(names[3], "evaluate")].after == ((names[3], "quantize"), (names[1], "evaluate"))
    assert graph[(names[3], "evaluate")].donor_dir == plan.variant(names[1]).run_dir


def test_two_teachers_share_the_prompts_and_a_filter_switched_off_shares_the_traces(tmp_path):
    plan = plan_sweep("smoke", ["teacher.model=toy:teacher,other/teacher"], tmp_path / "a")
    a, b = plan.variants
    assert b.shares["prompts"] == a.name and b.runs("generate") and b.donor == b.name
    plan = plan_sweep("smoke", ["filter.verify=true,false"], tmp_path / "b")
    a, b = plan.variants
    assert b.shares["generate"] == a.name and b.runs("filter") and b.donor == a.name


def test_prepare_links_the_shared_folders_and_locks_them_where_they_live(tmp_path):
    plan = plan_sweep("smoke", GRID, tmp_path / "sw")
    prepare(plan)
    lead, other = plan.variants[0].run_dir, plan.variants[3].run_dir
    for folder in ("prompts", "generate", "filter", "dataset"):
        link = other / folder
        assert link.is_symlink() and link.resolve() == (lead / folder).resolve()
    assert not (other / "train").exists() and (other / "recipe.yaml").exists()
    assert lock_root(other, "generate") == lead.resolve() and lock_root(other, "train") == other
    (lead / "prompts" / "x").write_text("written by the lead")
    assert (other / "prompts" / "x").read_text() == "written by the lead"
    saved = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert saved["reference"] == plan.reference and len(saved["variants"]) == 4
    prepare(plan)  # a re-run keeps the links
    # A sweep directory made by another plan: a folder it holds as its own is refused.
    other_plan = plan_sweep("smoke", ["train.max_examples=100,200"], tmp_path / "sw")
    (other_plan.variants[1].run_dir / "prompts").mkdir(parents=True)
    with pytest.raises(InputError, match="is not the link to"):
        prepare(other_plan)


def test_bad_sweeps_are_bad_input_naming_the_variant_or_key(tmp_path):
    with pytest.raises(InputError, match="variant train.epochs=two: .*") as e:
        plan_sweep("smoke", ["train.epochs=1,two"], tmp_path)
    assert e.value.key == "train.epochs"
    with pytest.raises(InputError, match="nothing to sweep over"):
        plan_sweep("smoke", [], tmp_path)
    with pytest.raises(InputError, match="no variant 'train.epochs=3' to compare against"):
        plan_sweep("smoke", ["train.epochs=1,2"], tmp_path, reference="train.epochs=3")
    with pytest.raises(InputError, match="unknown toy model"):
        plan_sweep("smoke", ["train.student=toy:nope"], tmp_path)
    plan = plan_sweep("smoke", GRID, tmp_path, reference="train.student=org/student-l,train.max_examples=200")
    assert plan.reference == "train.max_examples=200,train.student=org/student-l"


def test_the_executor_runs_each_step_after_those_it_waits_for_and_stops_below_a_failure(tmp_path):
    plan = plan_sweep("smoke", GRID, tmp_path)
    graph = steps(plan)
    started: list[tuple[str, str]] = []
    finished: set[tuple[str, str]] = set()
    at_once, peak = [0], [0]
    lock = threading.Lock()
    bad = (plan.variants[1].name, "train")

    def work(step):
        with lock:
            assert all(a in finished for a in step.after), step.key
            started.append(step.key)
            at_once[0] += 1
            peak[0] = max(peak[0], at_once[0])
        time.sleep(0.02)
        with lock:
            at_once[0] -= 1
            finished.add(step.key)
        if step.key == bad:
            raise RuntimeError("out of memory")

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        failed = execute(graph, lambda s: pool.submit(work, s), lambda f: f.done(),
                         lambda f: f.result(), concurrency=2, poll_s=0.005)
    assert peak[0] == 2
    # The failed train stops that variant's quantize, evaluate and publish, and the evaluate of
    # the variant that takes its teacher answers from it; the others all ran.
    assert set(failed) == {bad, (bad[0], "quantize"), (bad[0], "evaluate"), (bad[0], "publish"),
                           (plan.variants[3].name, "evaluate"), (plan.variants[3].name, "publish")}
    assert len(started) == len(graph) - 5
    with pytest.raises(RuntimeError, match="6 step.s. of the sweep did not run: .*out of memory"):
        raise_failures(failed)
    with pytest.raises(InputError):
        raise_failures({("a", "train"): InputError("bad")})


def test_a_variant_starts_from_its_donors_teacher_and_base_answers(tmp_path):
    donor, target = tmp_path / "donor", tmp_path / "target"
    rows = [{"id": f"{role}-{i}", "role": role, "correct": True} for role in ("teacher", "base", "student")
            for i in range(3)]
    with RunDir(donor).eval.writer() as w:
        for r in rows:
            w.write(r)
    with RunDir(target).eval.writer() as w:
        w.write(rows[0])
    assert seed_answers(donor, target) == 5
    assert seed_answers(donor, target) == 0
    assert sorted(r["id"] for r in RunDir(target).eval.read()) == sorted(
        r["id"] for r in rows if r["role"] != "student")


def test_training_subsets_are_nested_and_the_same_every_time():
    from datasets import Dataset

    from distill.train.data import subset
    ds = Dataset.from_dict({"id": [f"r{i}" for i in range(1000)], "messages": ["m"] * 1000})
    small, large = subset(ds, None, 100, 0, "h"), subset(ds, 0.5, None, 0, "h")
    assert len(small) == 100 and len(large) == 500
    assert set(small["id"]) < set(large["id"])
    assert small["id"] == subset(ds, None, 100, 0, "h")["id"]
    assert set(subset(ds, None, 100, 1, "h")["id"]) != set(small["id"])
    assert len(subset(ds, 0.5, 100, 0, "h")) == 100 and subset(ds, None, 5000, 0, "h") is ds
    assert subset(ds, None, None, 0, "h") is ds


def test_the_sweep_command_says_what_is_wrong_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app
    result = CliRunner().invoke(app, ["sweep", "smoke", "--run-dir", str(tmp_path / "sw"),
                                      "--over", "train.epochs=1,two"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "variant train.epochs=two" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "sw").exists()


def test_a_sweep_of_some_stages_waits_only_for_those(tmp_path):
    plan = plan_sweep("smoke", GRID, tmp_path)
    graph = steps(plan, ["train", "evaluate"])
    assert {s.stage for s in graph} == {"train", "evaluate"} and len(graph) == 8
    assert all(s.after == () for s in graph if s.stage == "train")
    # quantize left out: evaluate waits for its train
    assert all((s.variant.name, "train") in s.after for s in graph if s.stage == "evaluate")
    from typer.testing import CliRunner

    from distill.cli import app
    result = CliRunner().invoke(app, ["sweep", "smoke", "--run-dir", str(tmp_path / "sw"),
                                      "--over", "train.epochs=1,2", "--stages", "train,evaluat"])
    assert result.exit_code == 2 and "--stages: unknown stage(s) 'evaluat'" in result.output
