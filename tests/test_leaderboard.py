"""`distill leaderboard RUN_DIR...`: one table across runs from synthetic run directories
(known scores, sizes and costs), its plots, and the HTML page rendered in headless Chromium."""

import csv
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from distill.config import Recipe, dump_recipe
from distill.eval import metrics
from distill.records import RunDir, Stage, write_text

BENCHES = {"toy_arith": "reasoning", "toy_code": "coding"}


def _recipe(name, student, method, teacher="big-moe"):
    return Recipe.model_validate({
        "run": {"name": name},
        "prompts": {"sources": [{"name": "arith", "kind": "toy", "family": "arith",
                                 "category": "reasoning"}]},
        "teacher": {"model": teacher}, "train": {"student": student, "method": method},
        "eval": {"benchmarks": list(BENCHES)}})


def _write_run(root, name, *, student, method, params, right, cost, seconds, teacher_right=8):
    """A finished run: `right` of 10 questions correct per benchmark for the student, 2 for
    the base, `teacher_right` for the teacher; weights of `params` parameters."""
    from safetensors.numpy import save_file

    run = root / name
    cfg = _recipe(name, student, method)
    write_text(run / "recipe.yaml", dump_recipe(cfg))
    correct = {"teacher": teacher_right, "base": 2, "student": right}
    models = {"teacher": "big-moe", "base": student, "student": f"{name}-distilled"}
    scores, questions = [], []
    for bench, cat in BENCHES.items():
        for role, k in correct.items():
            verdicts = [[i < k] for i in range(10)]
            est = metrics.score_interval(verdicts)
            scores.append({"model": models[role], "role": role, "benchmark": bench,
                           "category": cat, "metric": "pass@1", "score": est.value,
                           "ci_low": est.ci_low, "ci_high": est.ci_high, "n": 10})
            questions += [{"role": role, "model": models[role], "benchmark": bench,
                           "category": cat, "subcategory": None, "task_id": f"q{i}",
                           "score": float(i < k), "samples": 1} for i in range(10)]
    ev = Stage(run, "eval")
    ev.write_json("scores.json", scores)
    ev.write_json("questions.json", questions)
    ev.complete()
    model = run / "train" / "model"
    model.mkdir(parents=True)
    save_file({"embed": np.zeros((params // 4, 2), np.float32),
               "head": np.zeros((params // 2,), np.float32)}, str(model / "model.safetensors"))
    Stage(run, "train").complete(records=100, method=method, train_seconds=seconds)
    gen = Stage(run, "generate")
    with gen.writer() as w:  # four samples sharing the bill; one of an older config, not counted
        for i in range(5):
            w.write({"id": f"g{i}", "gen_hash": "h1" if i < 4 else "h0", "cost": cost / 4,
                     "usage": {"completion_tokens": 500 * right, "choices": 2}})
    gen.complete(samples=4, gen_hash="h1", cost=cost)
    RunDir(run).dataset.complete(records=100)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [_write_run(root, "small-sft", student="org/small", method="sft", params=1000,
                       right=4, cost=1.5, seconds=60),
            _write_run(root, "large-kd", student="org/large", method="logit_kd", params=8000,
                       right=6, cost=3.0, seconds=600),
            _write_run(root, "small-onpolicy", student="org/small", method="on_policy",
                       params=1000, right=5, cost=1.5, seconds=300)]


@pytest.fixture(scope="module")
def board(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    r = subprocess.run([sys.executable, "-m", "distill.cli", "leaderboard", *map(str, runs),
                        "--out", str(out), "--title", "Toy leaderboard"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_one_table_across_runs(board):
    from distill.publish.board import LONG_COLUMNS
    with open(board / "leaderboard.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == LONG_COLUMNS
        rows = list(reader)
    teacher = [r for r in rows if r["role"] == "teacher"]
    # The same teacher, scored the same in all three runs, appears once per benchmark.
    assert len(teacher) == 2 and teacher[0]["run"] == "small-sft, large-kd, small-onpolicy"
    # Two runs share the base org/small; org/large is its own.
    assert sorted(r["model"] for r in rows if r["role"] == "base") == \
        ["org/large", "org/large", "org/small", "org/small"]
    kd = next(r for r in rows if r["run"] == "large-kd" and r["role"] == "student"
              and r["benchmark"] == "toy_arith")
    assert kd["method"] == "logit_kd" and kd["params"] == "8000" and kd["gen_cost"] == "3"
    assert kd["gen_tokens"] == str(4 * 500 * 6 // 2)
    assert float(kd["retention"]) == pytest.approx(0.75) and float(kd["retention_low"]) < 0.75

    md = (board / "leaderboard.md").read_text()
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:6] == ["model", "role", "run", "teacher", "method", "params"]
    assert "toy_arith CI" in header and "mean_retention" in header
    # Sorted by mean pass@1: teacher, then the students best first, then the bases.
    order = [[c.strip() for c in l.strip("|").split("|")][:3] for l in lines[1:6]]
    assert order[:4] == [["big-moe", "teacher", "small-sft, large-kd, small-onpolicy"],
                         ["large-kd-distilled", "student", "large-kd"],
                         ["small-onpolicy-distilled", "student", "small-onpolicy"],
                         ["small-sft-distilled", "student", "small-sft"]]
    assert "| large-kd-distilled | student | large-kd | big-moe | logit_kd | 8K | 60.0 |" in md
    assert "## Retention per category" in md


def test_plots_are_pngs(board):
    for name in ("retention_by_category.png", "score_vs_size.png", "quality_vs_cost.png"):
        data = (board / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "leaderboard", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path}: not a run directory: it has no recipe.yaml"


# ------------------------------------------------------------------ the page in a real browser

# Chromium here: no sandbox (root in a container), no GPU, and no background connections
# (without those flags the closed network refuses Chromium's own requests and it stalls).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _chromium(*args):
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: ./setup.sh installs Debian's chromium package")
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "HOME": profile})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_html_page_renders_in_headless_chromium(board, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,1000",
              (board / "leaderboard.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1000, 1400)
    ink = (pixels < 200).mean()  # text, table rules and the plots' marks
    assert ink > 0.01, f"the screenshot is blank ({ink:.4f} of the pixels are dark)"
    assert len(np.unique(pixels)) > 20  # anti-aliased text and images, not a flat fill


def test_html_page_sorts_in_the_browser(board):
    """The page opened at #sort=-mean_retention: Chromium runs the page's script and the
    students come out by retention, highest first, empty cells last."""
    import re

    dom = _chromium("--dump-dom", (board / "leaderboard.html").as_uri() + "#sort=-mean_retention")
    table = dom.split("<tbody>")[1].split("</tbody>")[0]
    first_cells = re.findall(r"<tr><td>([^<]*)</td>", table)
    assert first_cells[:3] == ["large-kd-distilled", "small-onpolicy-distilled",
                               "small-sft-distilled"]
    assert first_cells[-1] == "big-moe"  # the teacher has no retention of its own
    assert 'data-dir="desc"' in dom
