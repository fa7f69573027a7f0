"""What a user sees: each stage's summary on stderr at the default level and not with --quiet,
progress as whole lines (never carriage-return frames) where stderr is a file, the level passed
on to the distill processes started from the CLI, and distill's records in a Prefect run's logs.
The CLI runs as a subprocess with stderr written to a file, as a Prefect worker or CI has it."""

import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from distill import logs
from distill.records import RunDir
from teacher_standin import Running, StandIn

REPO = Path(__file__).resolve().parents[1]
SMALL = ["-o", "prompts.sources.0.count=6", "-o", "prompts.sources.1.count=4",
         "-o", "prompts.sources.2.count=0"]
LINE = re.compile(r"^\d\d:\d\d:\d\d ")          # every log line starts with the time
TRACES = [{"messages": [{"role": "user", "content": "6+7?"},
                        {"role": "assistant", "content": "<think>6+7</think>\\boxed{13}"}],
           "answer": "13"},
          {"messages": [{"role": "user", "content": "6+8?"},
                        {"role": "assistant", "content": "<think>6+8</think>\\boxed{15}"}],
           "answer": "14"}]


def _cli(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[str, str]:
    """`python -m distill.cli ARGS` with stdout and stderr written to files (not a terminal);
    returns both."""
    out, err = tmp_path / f"out-{uuid.uuid4().hex}", tmp_path / f"err-{uuid.uuid4().hex}"
    env = {**{k: v for k, v in os.environ.items() if k not in (logs.LEVEL_ENV, logs.PROGRESS_ENV)},
           **(env or {})}
    with open(out, "w") as o, open(err, "w") as e:
        r = subprocess.run([sys.executable, "-m", "distill.cli", *args], stdout=o, stderr=e,
                           stdin=subprocess.DEVNULL, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, err.read_text()[-3000:]
    return out.read_text(), err.read_text()


@pytest.fixture
def restore_logging(monkeypatch):
    """setup() changes the `distill` logger and the environment: both are put back."""
    for name in (logs.LEVEL_ENV, *logs.BAR_SWITCHES):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    logger = logging.getLogger(logs.LOGGER)
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_stage_summaries_show_at_the_default_level_and_not_with_quiet(tmp_path):
    run, run2 = tmp_path / "run", tmp_path / "run2"
    out, err = _cli(tmp_path, "prompts", "smoke", "--run-dir", str(run), *SMALL)
    assert out.startswith("done in ") and str(run) in out      # the command's result: stdout
    summary = [ln for ln in err.splitlines()
               if "prompts: 10 prompts (toy_arith 6, toy_code 4, toy_mult 0)" in ln]
    assert len(summary) == 1 and LINE.match(summary[0]) and "INFO" not in summary[0]
    assert "\r" not in err

    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(t) + "\n" for t in TRACES))
    filter_args = ["filter", "smoke", "--run-dir", str(run2), "--input", str(traces),
                   "-o", "filter.decontaminate=none"]
    _, err = _cli(tmp_path, *filter_args)
    assert "filter: kept 1 of 2" in err and "\r" not in err
    assert all(LINE.match(ln) for ln in err.splitlines()), err

    out, err = _cli(tmp_path, "--quiet", "prompts", "smoke", "--run-dir", str(tmp_path / "q"), *SMALL)
    assert out.startswith("done in ") and err == ""
    # The level a parent set reaches the distill processes it starts (launched training ranks,
    # servers) through DISTILL_LOG_LEVEL.
    _, err = _cli(tmp_path, *filter_args, env={logs.LEVEL_ENV: "WARNING"})
    assert err == ""
    _, err = _cli(tmp_path, "--verbose", *filter_args)
    assert "filter: kept 1 of 2" in err


def test_generate_progress_is_whole_lines_in_a_log(tmp_path):
    """With stderr a file the progress bar is a line per interval (every answer here, with
    DISTILL_PROGRESS_EVERY_S=0) and one at the end; --quiet shows neither."""
    run = tmp_path / "run"
    with Running(StandIn(latency_s=0.02)) as s:
        over = [*SMALL, "-o", f"teacher.base_url={s.url}", "-o", "teacher.model=standin",
                "-o", "generate.max_concurrency=1"]
        _cli(tmp_path, "prompts", "smoke", "--run-dir", str(run), *over)
        _, err = _cli(tmp_path, "generate", "smoke", "--run-dir", str(run), *over,
                      env={logs.PROGRESS_ENV: "0"})
        _cli(tmp_path, "-q", "prompts", "smoke", "--run-dir", str(tmp_path / "q"), *over)
        _, quiet = _cli(tmp_path, "-q", "generate", "smoke", "--run-dir", str(tmp_path / "q"),
                        *over)
    assert RunDir(run).stage("generate").is_complete()
    assert "\r" not in err
    progress = [ln for ln in err.splitlines() if "generate (standin): " in ln]
    assert len(progress) >= 5, err
    assert all(LINE.match(ln) and re.search(r": \d+/10 samples \(\d+ s, ETA .*\) req/s=", ln)
               for ln in progress), progress
    assert "10/10 samples" in progress[-1]
    assert any(re.match(r"^\d\d:\d\d:\d\d generate: ", ln) for ln in err.splitlines())  # summary
    assert "generate" not in quiet and "\r" not in quiet


def test_progress_logs_a_line_per_interval_when_not_a_terminal(caplog, monkeypatch):
    from distill.teacher.progress import Progress

    monkeypatch.setattr(logs, "terminal", lambda: False)
    now = [100.0]
    caplog.set_level(logging.INFO, logger="distill.teacher.progress")
    p = Progress(10, "gen (m)", log_every_s=30, clock=lambda: now[0])
    lines = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
    for t, expected in ((10, 0), (31, 1), (40, 1), (60, 1), (62, 2)):
        now[0] = 100.0 + t
        p.advance(1, tokens=5)
        assert len(lines()) == expected, (t, lines())
    assert lines()[0].startswith("gen (m): 2/10 samples (31 s, ETA ")
    p.error("timeout")
    p.close()
    assert len(lines()) == 3 and lines()[-1].startswith("gen (m): 5/10 samples (62 s, ETA 1.0 min)")
    assert "err=1 (timeout 1)" in lines()[-1]


def test_setup_is_one_handler_to_stderr_whatever_the_calls(restore_logging, capsys):
    logger = restore_logging
    root = list(logging.getLogger().handlers)
    assert logs.setup() == logging.INFO and logs.setup("debug") == logging.DEBUG
    assert logs.setup("WARNING") == logging.WARNING
    assert len([h for h in logger.handlers if isinstance(h, logs._Stderr)]) == 1
    assert logging.getLogger().handlers == root and os.environ[logs.LEVEL_ENV] == "WARNING"
    assert logs.quiet()
    logging.getLogger("distill.x").info("not shown")
    logging.getLogger("distill.x").warning("shown %d", 1)
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING shown 1\n", capsys.readouterr().err)
    assert logs.setup() == logging.WARNING          # without a level: the one passed on
    logs.setup("INFO")
    logging.getLogger("distill.x").info("a summary")
    assert re.fullmatch(r"\d\d:\d\d:\d\d a summary\n", capsys.readouterr().err)
    logs.setup(stderr=False)
    assert not any(isinstance(h, logs._Stderr) for h in logger.handlers)
    with pytest.raises(Exception, match="DISTILL_LOG_LEVEL: unknown log level 'loud'"):
        logs.setup("loud")


def test_without_a_terminal_the_trainer_logs_lines_instead_of_a_bar(monkeypatch, caplog):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from distill.config import load_recipe
    from distill.config import recipe_path
    from distill.train.common import log_steps, trainer_kwargs

    cfg = load_recipe(recipe_path("smoke"), [])
    for terminal in (True, False):
        monkeypatch.setattr(logs, "terminal", lambda: terminal)
        assert trainer_kwargs(cfg.train, cfg, "out")["disable_tqdm"] is not terminal

    class Trainer:                       # what log_steps uses of a transformers Trainer
        def __init__(self, *callbacks):
            self.callbacks = list(callbacks)

        def pop_callback(self, cls):
            found = next((c for c in self.callbacks if isinstance(c, cls)), None)
            if found is not None:
                self.callbacks.remove(found)
            return found

        def add_callback(self, cb):
            self.callbacks.append(cb)

    with_bar = Trainer(ProgressCallback())
    log_steps(with_bar)
    assert [type(c) for c in with_bar.callbacks] == [ProgressCallback]
    plain = Trainer(PrinterCallback())
    log_steps(plain)
    [cb] = plain.callbacks
    caplog.set_level(logging.INFO, logger="distill.train")
    state = SimpleNamespace(is_local_process_zero=True, global_step=50, max_steps=1200)
    cb.on_log(None, state, None, logs={"loss": 0.81234, "learning_rate": 0.009, "epoch": 0.33,
                                       "total_flos": 1.0})
    assert caplog.records[-1].getMessage() == "train: step 50/1200 loss 0.8123 learning_rate 0.009 epoch 0.33"


def test_a_flow_sends_distill_records_to_its_run_logs_from_any_thread(monkeypatch, restore_logging):
    """distill_logs() (under each flow's @flow) puts Prefect's API handler on the `distill`
    logger at INFO for the run, with the run's id on records from threads without its context,
    and takes both away after."""
    import prefect.context
    from prefect.exceptions import MissingContextError
    from prefect.logging.handlers import APILogHandler, APILogWorker

    from flows.distill_flow import distill_logs

    run_id = uuid.uuid4()
    main = threading.current_thread()

    def get_run_context():
        if threading.current_thread() is not main:
            raise MissingContextError("no run context on this thread")
        return SimpleNamespace(flow_run=SimpleNamespace(id=run_id))

    sent: list[dict] = []
    monkeypatch.setattr(prefect.context, "get_run_context", get_run_context)
    monkeypatch.setattr(APILogWorker, "instance", classmethod(lambda cls, *a: SimpleNamespace(send=sent.append)))
    logger = restore_logging

    @distill_logs()
    def body():
        assert logger.getEffectiveLevel() == logging.INFO
        logging.getLogger("distill.filter").info("filter: kept 1 of 2")
        t = threading.Thread(target=lambda: logging.getLogger("distill.generate").info("generate: done"))
        t.start()
        t.join()
        logging.getLogger("distill.x").debug("not at INFO")

    body()
    assert [(s["name"], s["message"], s["flow_run_id"]) for s in sent] == [
        ("distill.filter", "filter: kept 1 of 2", str(run_id)),
        ("distill.generate", "generate: done", str(run_id))]
    assert not any(isinstance(h, APILogHandler) for h in logger.handlers)
