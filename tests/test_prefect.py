"""A real Prefect server and process worker: `prefect deploy --all` makes `distill/<recipe>` and
`refresh/<recipe>` (on its cron schedule) for every recipe; the `distill/smoke` deployment runs
to completion, then `refresh/smoke` after the prompt source grew, and the teacher, reached
through a recording proxy, was sent exactly the new prompts and nothing else."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from distill.teacher.local import free_port, serve_local

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECIPES = ["smoke", "r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"]

# A smaller smoke run: the flow and every stage run for real, on fewer prompts.
SMALL = ["train.epochs=1", "eval.limit=10"]
FIRST = ["prompts.sources.0.count=60", "prompts.sources.1.count=40"]
GROWN = ["prompts.sources.0.count=80", "prompts.sources.1.count=40"]  # 20 new arithmetic rows


def test_every_recipe_has_a_deployment_and_a_scheduled_refresh():
    """prefect.yaml against configs/, without a server: a new recipe without deployments,
    or a refresh without a schedule, fails here rather than at `prefect deploy`."""
    import yaml

    from distill.pipeline import CONFIG_DIR
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_entry: dict[str, dict] = {}
    for d in doc["deployments"]:
        by_entry.setdefault(d["entrypoint"], {})[d["name"]] = d
    recipes = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    runs = by_entry["flows/distill_flow.py:distill_flow"]
    refreshes = by_entry["flows/refresh_flow.py:refresh_flow"]
    assert set(runs) == set(refreshes) == recipes
    for name, d in refreshes.items():
        assert d["parameters"] == {"recipe": name} == runs[name]["parameters"]
        assert [s["cron"] for s in d["schedules"]] and all(s["active"] for s in d["schedules"])
        assert "schedules" not in runs[name]
    for entry in by_entry:
        path, fn = entry.split(":")
        assert f"def {fn}(" in (ROOT / path).read_text()


def _user_messages(requests: list[dict]) -> list[str]:
    return [next(m["content"] for m in r["messages"] if m["role"] == "user")
            for r in requests if "messages" in r]


def _prompt_records(run_dir: Path) -> dict[str, str]:
    from distill.records import Stage
    return {p["id"]: p["messages"][-1]["content"] for p in Stage(run_dir, "prompts").read()}


@pytest.mark.slow
def test_deployment_then_refresh_send_the_teacher_only_new_prompts(tmp_path):
    from standins import RecordingProxy

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PWD": str(ROOT), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PATH": f"{BIN}:{os.environ['PATH']}",
           # No scheduled refresh may start on its own during the test; the schedules are
           # still created and checked below.
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    logs = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=logs, stderr=logs)
    worker = None
    try:
        with serve_local("toy:teacher") as (teacher_url, _), \
                RecordingProxy(teacher_url.removesuffix("/v1")) as proxy:
            deadline = time.time() + 120
            while True:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline and server.poll() is None, \
                    (tmp_path / "server.log").read_text()
                time.sleep(1)

            def prefect(*args, timeout=300):
                r = subprocess.run([BIN / "prefect", *args], env=env, cwd=ROOT,
                                   capture_output=True, text=True, timeout=timeout)
                assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
                return r.stdout

            prefect("work-pool", "create", "local", "--type", "process")
            out = prefect("--no-prompt", "deploy", "--all")
            for name in RECIPES:
                assert f"distill/{name}" in out and f"refresh/{name}" in out, out[-3000:]
            refresh = httpx.get(f"{api}/deployments/name/refresh/r1-to-7b").json()
            assert [s["schedule"]["cron"] for s in refresh["schedules"]] == ["0 3 * * 1"]
            assert refresh["schedules"][0]["active"] is True
            assert httpx.get(f"{api}/deployments/name/distill/r1-to-7b").json()["schedules"] == []

            worker_log = open(tmp_path / "worker.log", "w")
            worker = subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "local"],
                                      env=env, cwd=ROOT, stdout=worker_log, stderr=worker_log)
            run_dir = tmp_path / "run"
            teacher = [f"teacher.base_url={proxy.url}/v1"]

            def deployment(name, overrides):
                params = json.dumps({"run_dir": str(run_dir), "overrides": overrides})
                out = prefect("deployment", "run", name, "--params", params, "--watch",
                              timeout=1200)
                assert "Completed" in out, out + (tmp_path / "worker.log").read_text()[-3000:]

            deployment("distill/smoke", FIRST + SMALL + teacher)
            for name in ["leaderboard.csv", "README.md", "dataset_card.md"]:
                assert (run_dir / "report" / name).stat().st_size > 0, name
            assert json.loads((run_dir / "prompts" / "_SUCCESS").read_text())["records"] == 100
            before = _prompt_records(run_dir)
            trained_before = json.loads((run_dir / "train" / "_SUCCESS").read_text())
            # generate asked once per prompt; evaluate asked the teacher its benchmark questions.
            assert sorted(set(before.values()) & set(_user_messages(proxy.requests))) == \
                sorted(before.values())
            sent_before = len(proxy.requests)

            deployment("refresh/smoke", GROWN + SMALL + teacher)
            after = _prompt_records(run_dir)
            new = {after[i] for i in set(after) - set(before)}
            assert len(new) == 20
            # The refresh sent the teacher the 20 new prompts, once each, and nothing else:
            # no old prompt, and no benchmark question (its eval answers are stored).
            sent = _user_messages(proxy.requests[sent_before:])
            assert sorted(sent) == sorted(new)

            summary = json.loads((run_dir / "refresh" / "_SUCCESS").read_text())["last"]
            assert summary["new_prompts"] == 20 and summary["retrained"], summary
            assert summary["stages"] == ["train", "evaluate", "publish"]
            trained_after = json.loads((run_dir / "train" / "_SUCCESS").read_text())
            assert trained_after["records"] > trained_before["records"]
            assert trained_after["config_hash"] != trained_before["config_hash"]

            artifacts = httpx.post(f"{api}/artifacts/filter", json={}).json()
            keys = {a["key"] for a in artifacts}
            assert {"smoke-filter-report", "smoke-leaderboard", "smoke-leaderboard-table",
                    "smoke-refresh"} <= keys, keys
            table = next(a for a in artifacts if a["key"] == "smoke-leaderboard-table")
            assert table["type"] == "table"
    finally:
        for p in (worker, server):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
