"""One writer per stage and run directory (distill/locks.py, taken in pipeline.run_stage).

The lock module between real processes: a second holder is refused naming the first, a
waiter gets the lock when the holder ends, kill -9 frees it at once, a forked child neither
keeps it from its parent nor frees it. Then real `distill generate` runs against a slow
stand-in teacher whose request log proves no sample was asked for twice: a second run is
refused (exit 2, naming the holder's pid), `--wait` waits and completes, a kill -9'd run's lock
does not block the re-run. The Prefect stage task and the stage flow wait for a holder."""

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from distill.config import dump_recipe
from distill.errors import InputError
from distill.locks import lock_path, read_holder, stage_lock
from distill.records import RunDir, read_jsonl
from teacher_standin import Running, StandIn
from test_generate import _settle, recipe, write_prompts

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _hold(run_dir: Path, stage: str, seconds: float) -> subprocess.Popen:
    """A process that holds `stage`'s lock for `seconds` (then exits); returns once it holds it."""
    code = ("import sys, time\nfrom distill.locks import stage_lock\n"
            f"with stage_lock({str(run_dir)!r}, {stage!r}):\n"
            "    print('held', flush=True)\n"
            f"    time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def _since(holder: dict) -> datetime:
    return datetime.strptime(holder["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- the module

def test_a_second_holder_is_refused_naming_the_first_and_kill_9_frees_it(tmp_path):
    holder = _hold(tmp_path, "generate", 60)
    try:
        written = read_holder(lock_path(tmp_path, "generate"))
        assert written["pid"] == holder.pid and written["host"] == socket.gethostname()
        assert written["stage"] == "generate"
        assert abs(datetime.now(timezone.utc) - _since(written)) < timedelta(minutes=1)
        with pytest.raises(InputError) as refused:
            with stage_lock(tmp_path, "generate"):
                pytest.fail("two holders")
        assert str(refused.value) == (
            f"stage generate of {tmp_path} is running in pid {holder.pid} on host "
            f"{written['host']} since {written['since']} (lock {tmp_path}/.locks/generate.lock); "
            "wait for it, or pass --wait")
        with stage_lock(tmp_path, "filter"):      # another stage is another lock
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with stage_lock(tmp_path, "generate") as me:  # no stale lock, no wait
        assert read_holder(lock_path(tmp_path, "generate")) == me and me["pid"] == os.getpid()
    assert read_holder(lock_path(tmp_path, "generate")) is None  # released: the file says so


def test_a_waiter_gets_the_lock_when_the_holder_ends_and_logs_it_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="distill.locks")
    holder = _hold(tmp_path, "train", 1.5)
    with stage_lock(tmp_path, "train", wait=True):
        assert holder.wait(10) == 0               # it held the lock to its end
    waiting = [r.getMessage() for r in caplog.records if "waiting for it" in r.getMessage()]
    assert len(waiting) == 1 and f"in pid {holder.pid} on host" in waiting[0]


def test_two_attempts_in_one_process_exclude_each_other(tmp_path):
    """A flock belongs to the open file description: a retry on another thread of the same
    process is refused too."""
    with stage_lock(tmp_path, "evaluate"):
        with pytest.raises(InputError, match=f"running in pid {os.getpid()} "):
            with stage_lock(tmp_path, "evaluate"):
                pass


def test_a_forked_child_neither_frees_the_lock_nor_erases_its_holder(tmp_path):
    """A forked child that unwinds the holder's `with` (an exception, sys.exit) leaves the lock
    to its parent."""
    code = ("import os, sys\nfrom distill.errors import InputError\n"
            "from distill.locks import lock_path, read_holder, stage_lock\n"
            f"run = {str(tmp_path)!r}\n"
            "with stage_lock(run, 'filter'):\n"
            "    child = os.fork()\n"
            "    if child == 0:\n"
            "        sys.exit(0)\n"
            "    os.waitpid(child, 0)\n"
            "    try:\n"
            "        with stage_lock(run, 'filter'):\n"
            "            print('free')\n"
            "    except InputError:\n"
            "        print('held by', read_holder(lock_path(run, 'filter'))['pid'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = re.fullmatch(r"held by (\d+)\n", done.stdout)
    assert pid, done.stdout


# ----------------------------------------------------------------------------- the generate stage

PROMPTS, SAMPLES = 10, 2


def _setup(run_dir: Path, url: str) -> Path:
    """Prompts on disk and a recipe against the stand-in: one sample per request, two at a time,
    so that a run lasts about PROMPTS * SAMPLES / 2 * latency."""
    cfg = recipe("standin", url, samples_per_prompt=SAMPLES, max_n_per_request=1,
                 max_concurrency=2)
    write_prompts(run_dir, PROMPTS)
    path = run_dir.parent / "recipe.yaml"
    path.write_text(dump_recipe(cfg))
    return path


def _generate(recipe_file: Path, run_dir: Path, *flags: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "distill.cli", "generate", str(recipe_file),
                             "--run-dir", str(run_dir), *flags], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=out)


def _until(check, what: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.02)


def _holds(proc: subprocess.Popen, run_dir: Path) -> bool:
    return (read_holder(lock_path(run_dir, "generate")) or {}).get("pid") == proc.pid


def _stored(run_dir: Path) -> list[str]:
    return [r["id"] for s in RunDir(run_dir).generate.shards() for r in read_jsonl(s)]


def _assert_complete(run_dir: Path) -> None:
    ids = _stored(run_dir)
    assert len(ids) == len(set(ids)) == PROMPTS * SAMPLES
    stage = RunDir(run_dir).generate
    assert stage.is_complete() and stage.manifest()["samples"] == PROMPTS * SAMPLES


def test_a_second_generate_is_refused_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    app = StandIn(latency_s=0.6)
    with Running(app) as s:
        recipe_file = _setup(run, s.url)
        first = _generate(recipe_file, run)
        _until(lambda: _holds(first, run), "lock", first)
        holder = read_holder(lock_path(run, "generate"))
        second = subprocess.run([sys.executable, "-m", "distill.cli", "generate", str(recipe_file),
                                 "--run-dir", str(run)], cwd=REPO, env=ENV, capture_output=True,
                                text=True, timeout=60)
        assert first.poll() is None               # refused while the first still runs
        assert first.wait(60) == 0
    assert second.returncode == 2
    assert second.stderr == (
        f"error: stage generate of {run} is running in pid {first.pid} on host "
        f"{socket.gethostname()} since {holder['since']} (lock {run}/.locks/generate.lock); "
        "wait for it, or pass --wait\n")
    assert holder["host"] == socket.gethostname() and holder["stage"] == "generate"
    assert abs(datetime.now(timezone.utc) - _since(holder)) < timedelta(minutes=1)
    _assert_complete(run)
    keys = {f"{i}+{i}=" for i in range(PROMPTS)}
    assert dict(app.stats.n_per_key) == {k: SAMPLES for k in keys}   # no sample asked twice
    assert app.stats.requests == PROMPTS * SAMPLES
    assert read_holder(lock_path(run, "generate")) is None           # released at the end


def test_wait_waits_for_the_holder_then_completes_asking_nothing_again(tmp_path):
    run, log = tmp_path / "run", tmp_path / "second.log"
    app = StandIn(latency_s=0.6)
    with Running(app) as s:
        recipe_file = _setup(run, s.url)
        first = _generate(recipe_file, run)
        _until(lambda: _holds(first, run), "lock", first)
        second = _generate(recipe_file, run, "--wait", log=log)
        _until(lambda: log.exists() and "waiting for it" in log.read_text(), "waiting line", second)
        assert first.poll() is None and second.poll() is None
        assert first.wait(60) == 0
        assert second.wait(60) == 0
    lines = log.read_text().splitlines()
    waiting = [line for line in lines if "waiting for it" in line]
    assert len(waiting) == 1 and f"is running in pid {first.pid} on host" in waiting[0]
    assert any(f"stage generate of {run}: lock free after" in line for line in lines)
    _assert_complete(run)
    keys = {f"{i}+{i}=" for i in range(PROMPTS)}
    assert dict(app.stats.n_per_key) == {k: SAMPLES for k in keys}
    assert app.stats.requests == PROMPTS * SAMPLES


def test_a_killed_runs_lock_does_not_block_the_rerun(tmp_path):
    run = tmp_path / "run"
    app = StandIn(latency_s=0.3)
    with Running(app) as s:
        recipe_file = _setup(run, s.url)
        first = _generate(recipe_file, run)
        _until(lambda: _holds(first, run) and len(_stored(run)) >= 4, "records", first)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not RunDir(run).generate.is_complete()
        _settle(app.stats)           # requests in flight at the kill reach the server's log
        stored, seen = _stored(run), len(app.stats.log)
        second = subprocess.run([sys.executable, "-m", "distill.cli", "generate", str(recipe_file),
                                 "--run-dir", str(run)], cwd=REPO, env=ENV, capture_output=True,
                                text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "waiting" not in second.stderr
    _assert_complete(run)
    asked = len(app.stats.log) - seen
    assert asked == PROMPTS * SAMPLES - len(stored)   # the re-run asked only for what was missing


# ----------------------------------------------------------------------------- the doors

def test_run_and_every_stage_command_take_wait():
    from typer.testing import CliRunner

    from distill.cli import app
    from distill.pipeline import STAGES

    for command in [*STAGES, "run", "refresh"]:
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--wait" in result.output, command


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_prefect_stage_task_and_stage_flow_wait_for_a_holder(tmp_path):
    """A retried task, or a stage flow run started again, while the first attempt still holds
    the stage (a lost worker still running): it waits, logging the holder, then runs."""
    from flows.distill_flow import stage
    from flows.stage_flow import stage_flow

    # A handler of our own: importing Prefect configures logging, replacing caplog's on the root.
    logs = _Lines()
    logger = logging.getLogger("distill.locks")
    logger.addHandler(logs)
    logger.setLevel(logging.INFO)
    run = tmp_path / "run"
    run.mkdir()
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(dump_recipe(recipe("standin", "http://127.0.0.1:9/v1")))
    try:
        for attempt in (lambda: stage.fn("prompts", str(recipe_file), [], str(run)),
                        lambda: stage_flow.fn.__wrapped__("prompts", str(recipe_file), str(run))):
            logs.lines.clear()
            holder = _hold(run, "prompts", 1.0)
            attempt()
            assert holder.wait(10) == 0
            waiting = [line for line in logs.lines if "waiting for it" in line]
            assert len(waiting) == 1 and f"in pid {holder.pid} on host" in waiting[0]
            assert RunDir(run).prompts.is_complete()
    finally:
        logger.removeHandler(logs)
        logger.setLevel(logging.NOTSET)
