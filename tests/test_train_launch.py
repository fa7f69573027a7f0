"""train.launch: run_train starts the real `accelerate launch` (two CPU ranks over gloo with
configs/accelerate/cpu-ddp.yaml), streams and logs it, and stops it with its parent; the ranks
run under the stage lock their launcher holds; the model loads after the trainer arguments, so
DeepSpeed ZeRO-3 builds it sharded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.locks import lock_path, read_holder
from distill.pipeline import run_stage
from distill.records import RunDir
from distill.serving.launcher import free_port
from distill.train import run_train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import _recipe, _run_dir  # noqa: E402

CPU_DDP = "configs/accelerate/cpu-ddp.yaml"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_launch_trains_on_two_cpu_ranks_and_saves_once(tmp_path, capsys, caplog):
    run = _run_dir(tmp_path / "run", 8, 8)
    cfg = _recipe(max_steps=2, batch_size=4, launch={"accelerate_config": CPU_DDP})
    caplog.set_level("INFO", logger="distill.train")
    # As `distill train` runs it: under the stage's lock, which the ranks (`distill train`
    # again, under accelerate) must not wait for or be refused by.
    model_dir = run_stage("train", cfg, run)
    assert read_holder(lock_path(run, "train")) is None          # released
    out = capsys.readouterr().err                   # the ranks' output, streamed
    logged = [r.getMessage() for r in caplog.records]
    command = next(line for line in logged if line.startswith("train: ") and " launch " in line)
    assert command.endswith(f"accelerate launch --config_file {Path(CPU_DDP).resolve()} -m distill.cli "
                            f"train {run / 'recipe.yaml'} --run-dir {run}")
    manifest = RunDir(run).stage("train").manifest()
    assert manifest["world_size"] == 2
    assert manifest["ranks"] == [{"rank": 0, "steps": 2}, {"rank": 1, "steps": 2}]
    log = (run / "train" / "logs" / "launch.log").read_text()
    assert log.count("train: model saved to") == 1 and "train: model saved to" in out  # streamed too
    # each rank ends its process group before it exits (not left to the interpreter's teardown)
    assert sorted(line.split("rank ")[1] for line in log.splitlines()
                  if "left its process group" in line) == ["0 left its process group", "1 left its process group"]
    assert (model_dir / "model.safetensors").exists() and RunDir(run).stage("train").is_complete()
    caplog.clear()
    assert run_train(cfg, run) == model_dir  # complete: no second launch
    assert " launch " not in capsys.readouterr().err + caplog.text


def test_a_failed_launch_is_an_error_carrying_the_log_tail(tmp_path):
    run = _run_dir(tmp_path / "run", 4, 4)
    cfg = _recipe(max_steps=1, launch={"accelerate_config": CPU_DDP, "extra_args": ["--no_such_flag"]})
    with pytest.raises(RuntimeError, match=r"(?s)exited with code [12].*no_such_flag"):
        run_train(cfg, run)
    assert not RunDir(run).stage("train").is_complete()


RANK_DIES = """
import os, sys, time
import torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
for i in range(60):
    print(f"rank {rank} step {i}", flush=True)
dist.barrier()
if rank == 1:
    print("rank 1: the last words before the abort", file=sys.stderr, flush=True)
    os.abort()
time.sleep(120)
"""


def test_a_rank_that_dies_is_named_with_its_signal_and_last_words(tmp_path):
    """A rank killed by a native crash: the error says which rank, by which signal, and what the
    ranks printed last (not torchrun's traceback, which fills a log's tail and names no cause)."""
    from distill.train.launch import run_launched
    script = tmp_path / "rank_dies.py"
    script.write_text(RANK_DIES)
    torchrun = Path(sys.executable).with_name("torchrun")
    log = tmp_path / "launch.log"
    with pytest.raises(RuntimeError) as e:
        run_launched([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()),
                      str(script)], log)
    message = str(e.value)
    assert "rank 1 failed first, SIGABRT (exit code -6)" in message
    said = message.split("The ranks' last output:\n")[1].split("\n(the whole log")[0].splitlines()
    assert said[-1] == "rank 1: the last words before the abort" and len(said) == 30  # the tail
    assert "ChildFailedError" not in message and "Traceback" not in message
    assert str(log) in message and "ChildFailedError" in log.read_text()   # the whole log kept


def _processes_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if proc.name.isdigit() and text in cmdline:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_the_launch_and_its_ranks_stop_when_the_parent_is_killed(tmp_path):
    """kill -9 of the process that ran run_train: the launcher gets SIGTERM (it dies with its
    parent) and takes its ranks with it; nothing keeps training into the run directory."""
    run = _run_dir(tmp_path / "run", 8, 8)
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from test_train import _recipe\nfrom distill.train import run_train\n"
              f"run_train(_recipe(max_steps=100000, save_steps=100000, launch={{'accelerate_config': {CPU_DDP!r}}}), "
              f"__import__('pathlib').Path({str(run)!r}))\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        log = run / "train" / "logs" / "launch.log"
        # training has started on both ranks once the tokenized cache exists and the ranks run
        while not (log.exists() and len(_processes_naming(f"--run-dir {run}")) >= 3
                   and list((run / "train" / "cache").glob("source-*/tokens-*.arrow"))):
            assert parent.poll() is None and time.time() < deadline, log.read_text()[-2000:] if log.exists() else ""
            time.sleep(0.5)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 120
        while _processes_naming(f"--run-dir {run}"):
            assert time.time() < deadline, "ranks outlived the killed parent"
            time.sleep(0.5)
    finally:
        for pid in _processes_naming(f"--run-dir {run}"):
            os.kill(pid, signal.SIGKILL)
    assert not RunDir(run).stage("train").is_complete()


ZERO3_PROBE = """
import json, os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import distill.train.common as common
from distill.train import run_train
from test_train import _recipe
load = common.load_student

def probe(*args, **kwargs):
    model = load(*args, **kwargs)
    weight = model.get_input_embeddings().weight
    print("PROBE " + json.dumps({{"partitioned": hasattr(weight, "ds_id"), "shape": list(weight.shape)}}), flush=True)
    os._exit(0)

common.load_student = probe
run_train(_recipe(max_steps=1), Path({run!r}))
"""


def test_under_zero3_the_student_is_built_sharded(tmp_path):
    """What accelerate launch sets for configs/accelerate/zero3.yaml, on one CPU rank: the
    student must come out of from_pretrained already partitioned by zero.Init (parameters of
    size 0), which happens only when the trainer arguments exist before it loads."""
    pytest.importorskip("deepspeed")
    run = _run_dir(tmp_path / "run", 4, 4)
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
           "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    out = subprocess.run([sys.executable, "-c", ZERO3_PROBE.format(tests=str(Path(__file__).parent), run=str(run))],
                         env=env, capture_output=True, text=True, timeout=600)
    probe = [line for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    assert probe, out.stdout[-2000:] + out.stderr[-3000:]
    assert json.loads(probe[0][6:]) == {"partitioned": True, "shape": [0]}
