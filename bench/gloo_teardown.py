"""How often a gloo rank dies of SIGABRT when it exits with its process group alive, and with it
ended first (what distill/train/stage.py's _leave_process_group does on every launched rank).

Each launch is torchrun with 2 CPU ranks that all-reduce, gather an object (as the train stage
gathers every rank's steps) and exit, rank 0 a moment later. Run from the repository root with
the project's venv (./setup.sh):

    .venv/bin/python bench/gloo_teardown.py --launches 40

Measured on a 2-core machine (torch 2.13.0): 11 of 65 launches aborted with "terminate called
without an active exception" left to teardown; 0 of 40 with the group ended first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from distill.serving.launcher import free_port

RANKS = """
import sys, time, torch, torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import gather_object
PartialState(cpu=True)
rank = dist.get_rank()
for work in [dist.all_reduce(torch.ones(100_000), async_op=True) for _ in range(4)]:
    work.wait()
gather_object([{"rank": rank}])
if sys.argv[1] == "ended":
    dist.destroy_process_group()
if rank == 0:
    time.sleep(0.5)
"""


def launches(script: Path, mode: str, n: int) -> tuple[int, int]:
    """(launches that failed, of which SIGABRT) out of n."""
    torchrun = Path(sys.executable).with_name("torchrun")
    failed = aborted = 0
    for _ in range(n):
        p = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()),
                            str(script), mode], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            failed += 1
            aborted += "SIGABRT" in p.stderr
    return failed, aborted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ranks.py"
        script.write_text(RANKS)
        for mode in ("teardown", "ended"):
            failed, aborted = launches(script, mode, args.launches)
            print(f"group {'left to teardown' if mode == 'teardown' else 'ended first'}: "
                  f"{failed} of {args.launches} launches failed ({aborted} SIGABRT)", flush=True)


if __name__ == "__main__":
    main()
