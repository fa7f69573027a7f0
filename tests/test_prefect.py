"""A real Prefect server and process worker run the `distill/smoke` deployment to completion."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A smaller smoke run: the flow and every stage run for real, on fewer prompts.
OVERRIDES = ["prompts.sources.0.count=60", "prompts.sources.1.count=40",
             "train.epochs=1", "eval.limit=10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_deployment_runs_to_completion(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PWD": str(ROOT),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    logs = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=logs, stderr=logs)
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(1)

        def prefect(*args, timeout=300):
            r = subprocess.run([BIN / "prefect", *args], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=timeout)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            return r.stdout

        prefect("work-pool", "create", "local", "--type", "process")
        out = prefect("--no-prompt", "deploy", "--all")
        for name in ["smoke", "r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"]:
            assert f"distill/{name}" in out
        worker_log = open(tmp_path / "worker.log", "w")
        worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "local"],
                                  env=env, cwd=ROOT, stdout=worker_log, stderr=worker_log)
        run_dir = tmp_path / "run"
        params = json.dumps({"run_dir": str(run_dir), "overrides": OVERRIDES})
        out = prefect("deployment", "run", "distill/smoke", "--params", params, "--watch",
                      timeout=1200)
        assert "Completed" in out, out + (tmp_path / "worker.log").read_text()[-3000:]
        assert (run_dir / "report" / "leaderboard.csv").exists()
        assert (run_dir / "train" / "_SUCCESS").exists()
        assert json.loads((run_dir / "prompts" / "_SUCCESS").read_text())["records"] == 100
    finally:
        for p in (worker, server):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
