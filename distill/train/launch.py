"""The multi-process launch of the train stage: reads `train.launch` and the run's resolved
recipe.yaml; runs `accelerate launch ... -m distill.cli train` and writes its output to stderr
and to train/logs/launch.log. The ranks log at this process's level (DISTILL_LOG_LEVEL, which
distill.logs.setup sets) and, their output being a pipe, without progress bars.

The Prefect flow and `distill train` call `run_train` in one process; a 7B-14B student needs every
GPU of the node under DDP, ZeRO-3 or FSDP. With `train.launch.accelerate_config`, run_train (when
it is not itself a launched rank) starts accelerate on the recipe and waits for it: the launcher
runs in its own process group, gets SIGTERM if this process dies (even by kill -9), and is
stopped with all its ranks on an interrupt or error here.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from distill.errors import InputError

log = logging.getLogger(__name__)

LAUNCHED = "DISTILL_TRAIN_LAUNCHED"   # set on the launched processes


def under_launcher() -> bool:
    """A rank of a launch: distill's own marker, torchrun's LOCAL_RANK, or the
    ACCELERATE_MIXED_PRECISION every accelerate launcher sets (a launch typed by hand)."""
    return (os.environ.get(LAUNCHED) == "1" or "LOCAL_RANK" in os.environ
            or "ACCELERATE_MIXED_PRECISION" in os.environ)


def config_path(value: str) -> Path:
    """The accelerate config, as given or relative to the repository (configs/accelerate/...)."""
    from distill.config import CONFIG_DIR
    for path in (Path(value), CONFIG_DIR.parent / value):
        if path.is_file():
            return path.resolve()
    raise InputError("accelerate config not found", key="train.launch.accelerate_config", file=value)


def launch_command(launch, recipe_file: Path, run_dir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("accelerate")  # the launcher of this environment
    cmd = [str(exe), "launch"] if exe.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(config_path(launch.accelerate_config))]
    if launch.num_processes:
        cmd += ["--num_processes", str(launch.num_processes)]
    cmd += list(launch.extra_args)
    return cmd + ["-m", "distill.cli", "train", str(recipe_file), "--run-dir", str(run_dir)]


# torchrun's own lines (its agent's log records) and its report of the ranks that failed
_AGENT_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+ \d+ \S*torch/distributed/")
_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")
_ROOT = re.compile(r"Root Cause.*?rank\s*: (\d+).*?exitcode\s*: (-?\d+)", re.S)


def failure_report(text: str, lines: int = 30) -> str:
    """What a failed launch's log says, made short: which rank failed first and how (torchrun's
    root cause: a signal names the native crash), then that attempt's output from the ranks
    before the launcher's own report (a C++ abort's `terminate called ...`, a Python
    traceback), not the launcher's traceback, which names no cause. A log without torchrun's
    report (the launcher refused its arguments) is shown by its tail."""
    text = text[text.rfind("\n$ ") + 1:] if "\n$ " in text else text  # this attempt
    all_lines = text.splitlines()
    found = next(((i, m) for i, line in enumerate(all_lines)
                  if _AGENT_LINE.match(line) and (m := _FAILED.search(line))), None)
    if found is None:
        return "\n".join(all_lines[-lines:])
    cut, failed = found
    ranks_said = [line for line in all_lines[:cut] if not _AGENT_LINE.match(line) and not line.startswith("$ ")]
    first = _ROOT.search(text)                   # the root cause; else the first failure seen
    rank, code = (first.group(1), int(first.group(2))) if first else (failed[2], int(failed[1]))
    how = f"exit code {code}"
    if code < 0:
        try:
            how = f"{signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    said = "\n".join(ranks_said[-lines:]) if ranks_said else "(nothing)"
    return f"rank {rank} failed first, {how}; the other ranks were stopped. The ranks' last output:\n{said}"


def run_launched(cmd: list[str], log_path: Path, stop_timeout_s: float = 60.0) -> None:
    """Runs `cmd` with its output streamed to stderr and appended to `log_path`; a non-zero
    exit is a RuntimeError carrying the log's tail."""
    from distill.serving.launcher import die_with_parent, stop

    log.info("train: %s", shlex.join(cmd))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, LAUNCHED: "1", "PYTHONUNBUFFERED": "1"}
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log_path, "ab") as logfile:
        logfile.write(f"$ {shlex.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=die_with_parent)
        try:
            # Chunks, not lines: progress bars redraw with \r and would otherwise show late.
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(1 << 16):  # type: ignore[attr-defined]
                logfile.write(chunk)
                logfile.flush()
                sys.stderr.write(decode.decode(chunk))
                sys.stderr.flush()
            proc.wait()
        finally:
            # torchrun's agent answers SIGTERM by stopping its ranks (each in a session of its
            # own, out of reach of a signal to the launcher's group) and escalates to SIGKILL
            # after 30 s: it gets longer than that before it is killed itself.
            stop(proc, stop_timeout_s)
            if proc.stdout is not None:
                proc.stdout.close()
    if proc.returncode != 0:
        try:
            report = failure_report(log_path.read_text(errors="replace"))
        except OSError:
            report = "(no log)"
        raise RuntimeError(f"the training launch exited with code {proc.returncode}: {report}\n"
                           f"(the whole log: {log_path})")
