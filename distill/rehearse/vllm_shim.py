"""`vllm serve` for a rehearsal on a machine without vLLM: takes the command line the pipeline
would give vLLM, prints it, and serves the model with distill's own server under vLLM's rules.

    python -m distill.rehearse.vllm_shim serve MODEL --port P --served-model-name NAME \\
        --max-model-len L [any other vllm serve flags]

What carries over: the model, host, port, served name, revision, and --max-model-len, which the
server enforces as vLLM does (a request whose prompt plus max_tokens do not fit is answered 400
with vLLM's message, never silently shortened). Flags that only place the model on GPUs
(parallel sizes, memory utilisation, expert parallelism, ...) are accepted and named in the
log, and have no effect here. The recipe's `eval.vllm_executable` (or `teacher.vllm.executable`)
points at this shim in a rehearsal; the flags it receives are exactly those of the real run.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from distill import logs

log = logging.getLogger("distill.rehearse.vllm_shim")  # __main__ when run with -m


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        raise SystemExit("usage: python -m distill.rehearse.vllm_shim serve MODEL [vllm serve flags]")
    p = argparse.ArgumentParser(prog="vllm serve (rehearsal)", add_help=False)
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--revision", default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    args, ignored = p.parse_known_args(argv[1:])
    logs.setup()
    log.info("rehearsal: vllm %s", shlex.join(argv))
    if ignored:
        log.info("rehearsal: no effect without GPUs: %s", shlex.join(ignored))
    cmd = [sys.executable, "-m", "distill.serving.server", "--model", args.model,
           "--host", args.host, "--port", str(args.port),
           "--served-name", args.served_model_name or args.model, "--strict-context"]
    if args.revision:
        cmd += ["--revision", args.revision]
    if args.max_model_len:
        cmd += ["--max-model-len", str(args.max_model_len)]
    # exec: the launcher's process group, its SIGTERM and the parent-death signal reach the
    # server itself.
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
