"""Where distill's log lines go: the one place logging is set up.

Library code logs through `logging.getLogger(__name__)` (the `distill.*` loggers) and prints
nothing; whoever runs it calls `setup` once: the CLI (`distill --quiet/--verbose`), the Prefect
flows (without a handler of their own: Prefect's handlers send the records to the run's logs)
and the servers distill starts as subprocesses. `setup` puts one handler on the `distill`
logger, to stderr, with lines like

    14:02:11 filter: kept 1187 of 1342
    14:02:11 WARNING filter: 3 traces could not be graded (...)

and leaves the root logger and its handlers alone. The level goes into DISTILL_LOG_LEVEL so that
the distill processes started from this one (`accelerate launch -m distill.cli train`, the
model servers) log at the same level; `setup()` without a level reads it (default INFO).

Where stderr is not a terminal (a log file, a Prefect worker, CI), progress is written as whole
lines every DISTILL_PROGRESS_EVERY_S seconds (default 30) and at the end instead of bars redrawn
with carriage returns (`terminal()` says which), and
`setup` turns off the Hugging Face libraries' own bars (datasets' map, downloads, transformers'
weight loading) through their environment switches, which the processes started from this one
inherit too. The trainer's bars are turned off where its arguments are made
(distill.train.common).
"""

from __future__ import annotations

import logging
import os
import sys

from distill.errors import InputError

LOGGER = "distill"
LEVEL_ENV = "DISTILL_LOG_LEVEL"
PROGRESS_ENV = "DISTILL_PROGRESS_EVERY_S"
# The Hugging Face libraries' own switches, read when they are imported; a value already set
# (e.g. =0 by a user who wants the bars in a log) is kept.
BAR_SWITCHES = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")


class _Stderr(logging.StreamHandler):
    """To sys.stderr as it is when a record is written (a test's capture, a CLI runner's), not
    as it was when the handler was made."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


class _Concise(logging.Formatter):
    """`HH:MM:SS message`, with the level name before the message from WARNING up."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        return f"{self.formatTime(record, self.datefmt)} {level}{record.message}"


def level_of(value: int | str) -> int:
    """A logging level from a number or a name (debug, INFO, warning, ...)."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    level = logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise InputError(f"unknown log level {value!r}: DEBUG, INFO, WARNING or ERROR",
                         key=LEVEL_ENV)
    return level


def terminal() -> bool:
    """Whether stderr is a terminal (progress bars can be redrawn in place)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):   # replaced by an object without it, or closed
        return False


def progress_every_s() -> float:
    """How often a progress line is logged where stderr is not a terminal."""
    value = os.environ.get(PROGRESS_ENV) or "30"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise InputError(f"{value!r} is not a number of seconds", key=PROGRESS_ENV)
    return seconds


def quiet() -> bool:
    """Whether `setup` (or anyone) set the `distill` logger above INFO: no progress either."""
    return logging.getLogger(LOGGER).level > logging.INFO


def setup(level: int | str | None = None, *, stderr: bool = True) -> int:
    """Sets the `distill` logger's level (`level`, else DISTILL_LOG_LEVEL, else INFO) and its one
    handler to stderr (none with `stderr=False`: records then reach only the handlers of the
    loggers above it, e.g. Prefect's). Called again, it replaces what it set before. Returns the
    level."""
    if level is None:
        level = os.environ.get(LEVEL_ENV) or logging.INFO
    level = level_of(level)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if isinstance(h, _Stderr)]:
        logger.removeHandler(handler)
    if stderr:
        handler = _Stderr()
        handler.setFormatter(_Concise())
        logger.addHandler(handler)
    name = logging.getLevelName(level)
    os.environ[LEVEL_ENV] = name if isinstance(logging.getLevelName(name), int) else str(level)
    if not terminal():
        for name in BAR_SWITCHES:
            os.environ.setdefault(name, "1")
    return level
