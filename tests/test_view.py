"""distill view: the index of a run (built once, rebuilt when a source changes), the filters and
pages the JSON endpoints answer, bad input, and the page itself in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from distill.records import RunDir, write_json
from distill.view import index as view_index
from distill.links import view_url
from distill.view.query import RunView
from distill.view.server import make_server

ROLES = ("teacher", "base", "student", "student-q4_k_m")


def _trace(i: int, source: str, finish: str = "stop") -> dict:
    code = source == "code"
    content = "```python\ndef f(x):\n    return x + 1  # one more\n```" if code \
        else f"The answer is \\boxed{{{i}}}."
    return {"id": f"t{i:04d}", "source": source, "shape": "s", "category": "coding" if code else "reasoning",
            "subcategory": None, "messages": [{"role": "user", "content": f"question {i} of {source}"}],
            "verifier": "code" if code else "math", "answer": None if code else str(i),
            "tests": "assert f(1) == 2" if code else None, "entry_point": "f" if code else None,
            "source_revision": None, "prompt_id": f"p{i:04d}", "sample_index": 0, "gen_hash": "g",
            "reasoning": "r" * (10 + i), "content": content, "finish_reason": finish,
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "reasoning_tokens": 3,
                      "cached_prompt_tokens": 0, "choices": 1},
            "latency_s": 0.1, "attempts": 1, "cost": 0.0, "teacher": "toy:teacher"}


def _eval(role: str, task: str, correct: bool) -> dict:
    return {"id": f"{role}-{task}", "role": role, "model": f"model-{role}", "benchmark": "toy_arith",
            "version": "1", "task_id": task, "categories": {"carries": "1"}, "sample": 0,
            "correct": correct, "reason": "ok" if correct else "wrong answer: got 1, want 2",
            "answer": f"{role} says {task}", "content": f"{role} answers {task}",
            "reasoning": f"{role} thinks", "finish_reason": "stop", "sampling_hash": "h",
            "max_tokens": 64, "retried_attempts": 0, "grade_retries": 0}


def make_run(path: Path, n: int = 30) -> Path:
    """A run directory with the real record shapes: n traces (a third code, one truncated),
    the filter's verdicts (every fifth trace fails verify with the sandbox's output), and an
    evaluation where the student flips two questions against the teacher."""
    rd = RunDir(path)
    (path / "recipe.yaml").parent.mkdir(parents=True, exist_ok=True)
    (path / "recipe.yaml").write_text("run: {name: viewed}\n")
    with rd.generate.writer() as w, rd.filter.writer() as v:
        for i in range(n):
            source = "code" if i % 3 == 0 else "arith"
            w.write(_trace(i, source, "length" if i == 1 else "stop"))
            failed = "truncated" if i == 1 else "verify" if i % 5 == 0 else None
            why = "AssertionError: f(1) returned 3" if source == "code" else "wrong answer: got 3, want 4"
            v.write({"id": f"t{i:04d}", "prompt_id": f"p{i:04d}", "kept": failed is None, "failed": failed,
                     "reasons": {"truncated": "finish_reason length" if i == 1 else "ok",
                                 **({"verify": why if failed == "verify" else "ok"} if i != 1 else {})}})
    tasks = [f"toy_arith/q{k}" for k in range(4)]
    with rd.eval.writer() as w:
        for k, task in enumerate(tasks):
            for role in ROLES:
                # the student gets q0 and q1 right where the teacher does not
                correct = (k < 2) if role.startswith("student") else (role == "teacher" and k >= 2)
                w.write(_eval(role, task, correct))
    write_json(path / "eval" / "comparisons.json", [
        {"benchmark": "toy_arith", "category": "reasoning", "metric": "pass@1", "a": "student",
         "b": "teacher", "difference": 0.5, "ci_low": 0.0, "ci_high": 1.0, "n": 4,
         "gained": tasks[:2], "lost": [], "p_value": 0.5}])
    return path


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def test_index_is_cached_and_rebuilt_when_a_source_changes(run, monkeypatch):
    built = []
    real = view_index._build
    monkeypatch.setattr(view_index, "_build", lambda r: built.append(r) or real(r))
    first = view_index.load_index(run)
    assert (run / "view" / "index.json").exists() and len(first["traces"]["id"]) == 30
    view_index.load_index(run)
    assert len(built) == 1                      # the second load reads the cache
    with RunDir(run).generate.writer() as w:   # a new shard: the index no longer describes the run
        w.write(_trace(99, "arith"))
    assert len(view_index.load_index(run)["traces"]["id"]) == 31 and len(built) == 2


def test_filters_and_pages(run):
    view = RunView(run)
    facets = view.summary()["facets"]
    assert facets["status"] == {"kept": 23, "rejected": 7}
    assert facets["failed"]["verify"] == 6 and facets["finish"]["length"] == 1
    code = view.traces({"source": "code", "failed": "verify"})
    assert code["total"] == 2 and {r["id"] for r in code["rows"]} == {"t0000", "t0015"}
    assert all(r["reason"] == "AssertionError" for r in code["rows"])
    assert view.traces({"reason": "wrong answer"})["total"] == 4
    long = view.traces({"min_chars": "60", "max_chars": "70"})
    assert 0 < long["total"] < 30 and all(60 <= r["chars"] <= 70 for r in long["rows"])
    page = view.traces({"offset": "25", "limit": "10"})
    assert page["total"] == 30 and [r["id"] for r in page["rows"]] == [f"t{i:04d}" for i in range(25, 30)]
    one = view.trace("t0015")
    assert one["verdict"]["reasons"]["verify"] == "AssertionError: f(1) returned 3"
    assert one["trace"]["tests"] == "assert f(1) == 2"


def test_flips_show_every_role_answer_extra_roles_included(run):
    flips = RunView(run).flips({"benchmark": "toy_arith", "a": "student", "b": "teacher"})
    assert flips["total"] == 2 and flips["roles"] == list(ROLES)
    row = flips["rows"][0]
    assert row["task_id"] == "toy_arith/q0" and row["flip"] == "student gained vs teacher"
    assert row["answers"]["teacher"]["correct"] is False and row["answers"]["student"]["correct"] is True
    assert row["answers"]["student-q4_k_m"]["content"] == "student-q4_k_m answers toy_arith/q0"


def test_a_torn_last_line_is_skipped(run):
    shard = sorted((run / "generate").glob("part-*.jsonl"))[0]
    with open(shard, "a") as f:
        f.write('{"id": "torn", "sour')
    assert "torn" not in view_index.load_index(run)["traces"]["id"]


def test_a_folder_that_is_not_a_run_is_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill.cli", "view", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path}: not a run directory: it has no recipe.yaml, generate/ or eval/"
    r = subprocess.run([sys.executable, "-m", "distill.cli", "view", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such folder" in r.stderr


def test_links_are_hash_routes_on_the_default_port():
    assert view_url("traces", failed="verify", source=None) == "http://127.0.0.1:8765/#/traces?failed=verify"


# ------------------------------------------------------------------ the page in headless Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture
def served(tmp_path):
    """Two runs served on a free port; yields the page's base URL."""
    other = make_run(tmp_path / "other", n=12)
    server = make_server([make_run(tmp_path / "run"), other], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _dom(url: str) -> str:
    """The page's DOM once its script has fetched and rendered (virtual time lets the fetches
    finish before the dump)."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: ./setup.sh installs Debian's chromium package")
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            "--virtual-time-budget=10000", "--dump-dom", url],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile})
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-ready="1"' in r.stdout, r.stdout[-2000:]
    return r.stdout


def _listed(dom: str) -> list[str]:
    import re
    return re.findall(r'<tr data-id="([^"$]+)">', dom)


def test_page_lists_traces_and_filters_change_the_list(served):
    everything = _dom(served)
    assert '<span id="count">30 traces</span>' in everything
    assert len(_listed(everything)) == 30
    rejected_code = _dom(served + "#/traces?status=rejected&source=code")
    assert '<span id="count">2 traces</span>' in rejected_code
    assert _listed(rejected_code) == ["t0000", "t0015"]
    assert 'option value="code" selected' in rejected_code
    second = _dom(served + "#/traces?run=1")
    assert '<span id="count">12 traces</span>' in second and "other (" in second


def test_trace_page_collapses_reasoning_and_shows_the_sandbox_output(served):
    dom = _dom(served + "#/trace/t0015")
    assert '<details id="reasoning">' in dom and "<details id=\"reasoning\" open" not in dom
    assert "AssertionError: f(1) returned 3" in dom
    assert '<span class="kw">def</span>' in dom and '<span class="com"># one more</span>' in dom


def test_flipped_question_shows_both_answers_side_by_side(served):
    dom = _dom(served + "#/eval?benchmark=toy_arith&category=reasoning&a=student&b=teacher")
    assert "2 questions flipped" in dom
    flip = dom.split('data-task="toy_arith/q0"')[1].split('class="flip"')[0]
    for role in ROLES:
        assert f'data-role="{role}"' in flip and f"{role} answers toy_arith/q0" in flip


def test_report_links_open_the_filtered_views(served):
    """The filter report's and the leaderboard's links, pointed at this server, open the list
    of traces a filter rejected and the questions the student flipped."""
    import re
    from distill.filters.report import markdown
    from distill.links import BASE, leaderboard_section
    counts = {"input": "generate", "total": 30, "kept": 23, "kept_fraction": 0.7667,
              "rejected": {"truncated": 1, "verify": 6}, "reasons": {"verify": {"wrong answer": 4}},
              "by_source": {"code": {"total": 10, "kept": 8, "kept_fraction": 0.8,
                                     "rejected": {"verify": 2}}},
              "by_category": {}, "examples": {"verify": {"wrong answer": [
                  {"id": "t0005", "reason": "wrong answer: got 3, want 4", "prompt": "q",
                   "answer_tail": "3"}]}}}
    md = markdown(counts)
    links = re.findall(r"\]\((http://[^)]+)\)", md)
    assert f"{BASE}#/traces?failed=verify" in links
    assert f"{BASE}#/traces?status=rejected&source=code" in links
    assert f"{BASE}#/trace/t0005" in links
    verify = _dom(f"{BASE}#/traces?failed=verify".replace(BASE, served))
    assert '<span id="count">6 traces</span>' in verify
    by_source = _dom(f"{BASE}#/traces?status=rejected&source=code".replace(BASE, served))
    assert _listed(by_source) == ["t0000", "t0015"]

    board = leaderboard_section([{"benchmark": "toy_arith", "category": "reasoning", "role": r}
                                 for r in ("teacher", "base", "student")])
    link = re.findall(r"\]\((http://[^)]+)\)", board)
    assert link[0] == f"{BASE}#/eval?benchmark=toy_arith&category=reasoning&a=student&b=teacher"
    assert "2 questions flipped" in _dom(link[0].replace(BASE, served))


def test_screenshot_of_a_run_is_a_small_png_with_the_page_on_it(run, tmp_path):
    import numpy as np
    from PIL import Image
    from distill.view.screenshot import screenshot
    out = screenshot(run, tmp_path / "shot.png", "#/traces?status=rejected", "900,500")
    pixels = np.asarray(Image.open(out).convert("L"))
    assert pixels.shape == (500, 900)
    assert (pixels < 200).mean() > 0.01 and len(np.unique(pixels)) > 20   # text, not a blank page
    assert out.stat().st_size < 200_000


class _Browser:
    """Headless Chromium driven over the DevTools protocol (websockets, which Prefect already
    brings): navigate, run a script in the page, wait for a condition."""

    def __init__(self, profile: Path):
        import time
        exe = shutil.which("chromium")
        if exe is None:
            pytest.fail("chromium is not installed: ./setup.sh installs Debian's chromium package")
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "HOME": str(profile)})
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        from websockets.sync.client import connect
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def eval(self, script: str):
        return self.call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value")

    def wait(self, script: str, timeout: float = 30):
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.eval(script)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true: {script}; page: {self.eval('document.body.innerText')[:1000]}")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_picking_a_filter_in_the_page_lists_fewer_traces_and_a_click_opens_one(served, tmp_path):
    browser = _Browser(tmp_path / "profile")
    try:
        browser.call("Page.navigate", url=served)
        browser.wait("document.getElementById('count')?.textContent === '30 traces'")
        browser.eval("""const s = document.querySelector('select[name=failed]');
                        s.value = 'verify'; s.dispatchEvent(new Event('change', {bubbles: true}));""")
        browser.wait("document.getElementById('count')?.textContent === '6 traces'")
        assert "failed=verify" in browser.eval("location.hash")
        ids = browser.eval("[...document.querySelectorAll('#traces tbody tr')].map(r => r.dataset.id)")
        assert ids == ["t0000", "t0005", "t0010", "t0015", "t0020", "t0025"]
        browser.eval("document.querySelector('#traces tbody a').click()")
        browser.wait("document.getElementById('reasoning') !== null")
        assert browser.eval("document.getElementById('reasoning').open") is False
        assert "AssertionError: f(1) returned 3" in browser.eval("document.getElementById('verdict').innerText")
        browser.eval("""const r = document.getElementById('run');
                        r.value = '1'; r.dispatchEvent(new Event('change'));""")
        browser.wait("document.getElementById('count')?.textContent === '12 traces'")
    finally:
        browser.close()


def test_the_filter_stage_s_own_records_are_what_the_viewer_lists(tmp_path):
    """A run the real filter stage wrote: the viewer's counts are the filter report's."""
    from distill.filters import run_filter
    from distill.records import Stage
    from test_filters import GENERATIONS, _recipe as filter_recipe
    with Stage(tmp_path, "generate").writer() as w:
        for g in GENERATIONS:
            w.write(g)
    counts = run_filter(filter_recipe(verify=False), tmp_path)
    facets = RunView(tmp_path).summary()["facets"]
    assert facets["status"]["kept"] == counts["kept"]
    assert {f: n for f, n in facets["failed"].items() if f} == counts["rejected"]
    assert facets["finish"] == {"stop": 10, "length": 1}


def test_distill_view_serves_until_stopped(run):
    import urllib.request
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "view", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"viewing {run} at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as r:
            assert json.loads(r.read()) == [{"name": "run", "path": str(run)}]
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"distill view" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_any_two_roles_can_be_compared_where_the_evaluation_made_no_comparison(run):
    view = RunView(run)
    assert view.summary()["roles"] == list(ROLES)
    # student-q4_k_m answers as the student does: no disagreement; against the teacher, all four
    assert view.flips({"benchmark": "toy_arith", "a": "student-q4_k_m", "b": "student"})["total"] == 0
    flips = view.flips({"benchmark": "toy_arith", "a": "student-q4_k_m", "b": "teacher"})
    assert [(r["task_id"], r["flip"]) for r in flips["rows"]] == [
        ("toy_arith/q0", "student-q4_k_m gained vs teacher"), ("toy_arith/q1", "student-q4_k_m gained vs teacher"),
        ("toy_arith/q2", "student-q4_k_m lost vs teacher"), ("toy_arith/q3", "student-q4_k_m lost vs teacher")]


def test_picking_two_roles_in_the_page_shows_their_answers_side_by_side(served, tmp_path):
    browser = _Browser(tmp_path / "profile")
    try:
        browser.call("Page.navigate", url=served + "#/eval")
        browser.wait("document.getElementById('compare') !== null")
        browser.eval("""const f = document.getElementById('compare');
                        f.benchmark.value = 'toy_arith'; f.a.value = 'student-q4_k_m'; f.b.value = 'teacher';
                        f.b.dispatchEvent(new Event('change', {bubbles: true}));""")
        title = browser.wait("document.getElementById('flips-title')?.textContent")
        assert title.startswith("4 questions flipped: toy_arith")
        cards = browser.eval("""[...document.querySelector('.flip[data-task="toy_arith/q2"]')
                                .querySelectorAll('.answer')].map(a => a.dataset.role + ': ' + a.querySelector('h4').innerText)""")
        assert cards == ["teacher: teacher correct", "base: base wrong", "student: student wrong",
                         "student-q4_k_m: student-q4_k_m wrong"]
    finally:
        browser.close()
