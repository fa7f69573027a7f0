"""A real Prefect server with two process work pools, `cpu` and `gpu`, and a worker each:
`prefect deploy --all` makes `distill/<recipe>`, `refresh/<recipe>` (on its cron schedule) for
every recipe and `distill-stage/gpu`.

- `distill/r1-to-7b`, pointed at a teacher that demands an API key by CLI parameters, reaches
  it with the key from a Secret block in the deployment's job_variables, and a stage that fails
  on the gpu pool fails the run with that stage's message, after its retry;
- `distill/smoke` runs to completion with train and evaluate on the gpu pool, then
  `refresh/smoke` after the prompt source grew, and the teacher, reached through a recording
  proxy, was sent exactly the new prompts and nothing else.
"""

import inspect
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from distill.errors import InputError
from distill.serving.launcher import free_port, serve_local

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECIPES = ["smoke", "r1-to-1.5b", "r1-to-7b", "r1-to-14b", "qwen3-moe-to-8b"]
DISTILL = "flows/distill_flow.py:distill_flow"
REFRESH = "flows/refresh_flow.py:refresh_flow"
STAGE = "flows/stage_flow.py:stage_flow"
SWEEP = "flows/sweep_flow.py:distill_sweep"

# A smaller smoke run: the flow and every stage run for real, on fewer prompts.
SMALL = ["train.epochs=1", "eval.limit=10"]
FIRST = ["prompts.sources.0.count=60", "prompts.sources.1.count=40", "prompts.sources.2.count=0"]
GROWN = ["prompts.sources.0.count=80", "prompts.sources.1.count=40",
         "prompts.sources.2.count=0"]  # 20 new arithmetic rows
GPU = "distill-stage/gpu"


def test_every_recipe_has_a_deployment_and_a_scheduled_refresh():
    """prefect.yaml against configs/ and the flows, without a server: a new recipe without
    deployments, a refresh without a schedule, a parameter the flow does not take, or a
    `gpu_deployment` that is not a stage deployment on its own pool fails here rather than at
    `prefect deploy` or in the middle of a run."""
    import yaml

    from distill.config import CONFIG_DIR
    from flows.distill_flow import distill_flow
    from flows.refresh_flow import refresh_flow
    from flows.stage_flow import stage_flow
    from flows.sweep_flow import distill_sweep

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flows = {DISTILL: distill_flow, REFRESH: refresh_flow, STAGE: stage_flow, SWEEP: distill_sweep}
    by_entry: dict[str, dict] = {}
    for d in doc["deployments"]:
        by_entry.setdefault(d["entrypoint"], {})[d["name"]] = d
    assert set(by_entry) == set(flows)
    recipes = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    runs, refreshes, stages = by_entry[DISTILL], by_entry[REFRESH], by_entry[STAGE]
    assert set(runs) == set(refreshes) == recipes
    stage_names = {f"{stage_flow.name}/{name}": d for name, d in stages.items()}
    for name, d in refreshes.items():
        assert d["parameters"]["recipe"] == name and d["parameters"] == runs[name]["parameters"]
        assert [s["cron"] for s in d["schedules"]] and all(s["active"] for s in d["schedules"])
        assert "schedules" not in runs[name]
        target = d["parameters"].get("gpu_deployment")
        if name != "smoke":  # the real recipes train on GPUs; the CPU demo runs in one process
            assert target in stage_names, target
        if target:
            assert stage_names[target]["work_pool"]["name"] != d["work_pool"]["name"]
    for entry, fn in flows.items():
        taken = set(inspect.signature(fn.fn).parameters)
        for d in by_entry[entry].values():
            assert set(d.get("parameters", {})) <= taken, (entry, d["name"])
            assert d.get("work_pool", {}).get("name"), (entry, d["name"])


def test_placement_sends_the_gpu_stages_to_the_stage_deployment_only_when_named():
    from flows.distill_flow import placement

    everything = ["prompts", "generate", "filter", "train", "quantize", "evaluate", "publish"]
    assert placement(None, None, None) == dict.fromkeys(everything)
    assert placement(None, GPU, None) == {**dict.fromkeys(everything), "train": GPU,
                                         "evaluate": GPU}
    # A subset runs in pipeline order, whatever order it was given in.
    assert list(placement(["generate", "prompts"], GPU, None)) == ["prompts", "generate"]
    assert placement(["train", "publish"], GPU, ["train"]) == {"train": GPU, "publish": None}
    with pytest.raises(InputError, match="stages: unknown stage.*'generation'"):
        placement(["prompts", "generation"], None, None)
    with pytest.raises(InputError, match="gpu_stages: unknown stage.*'eval'"):
        placement(None, GPU, ["train", "eval"])


def test_a_stage_run_that_did_not_complete_fails_the_task_with_its_message():
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Cancelled, Completed, Crashed, Failed

    from flows.distill_flow import raise_unless_completed

    def run(state):
        return FlowRun(flow_id=uuid.uuid4(), name="r1-to-7b-train", state=state)

    raise_unless_completed(run(Completed()), "train", GPU)
    failed = "Flow run encountered an exception: InputError: run the filter stage first"
    with pytest.raises(RuntimeError) as e:
        raise_unless_completed(run(Failed(message=failed)), "train", GPU)
    assert str(e.value) == (f"stage train: flow run 'r1-to-7b-train' of {GPU} ended Failed: "
                            + failed)
    for state, name in [(Crashed(message="worker lost"), "Crashed"),
                        (Cancelled(), "Cancelled")]:
        with pytest.raises(RuntimeError, match=f"ended {name}"):
            raise_unless_completed(run(state), "evaluate", GPU)


def _user_messages(requests: list[dict]) -> list[str]:
    return [next(m["content"] for m in r["messages"] if m["role"] == "user")
            for r in requests if "messages" in r]


def _prompt_records(run_dir: Path) -> dict[str, str]:
    from distill.records import Stage
    return {p["id"]: p["messages"][-1]["content"] for p in Stage(run_dir, "prompts").read()}


class PrefectServer:
    """A Prefect server on 127.0.0.1, the `cpu` and `gpu` process pools with one worker each,
    and every deployment of prefect.yaml."""

    def __init__(self, home: Path):
        port = free_port()
        self.home = home
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(home / "prefect"),
                    "PREFECT_API_URL": self.api, "PWD": str(ROOT),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "PREFECT_LOGGING_LEVEL": "WARNING", "PATH": f"{BIN}:{os.environ['PATH']}",
                    # Stage runs are picked up within 2 s rather than 10.
                    "PREFECT_WORKER_QUERY_SECONDS": "2",
                    # No scheduled refresh may start on its own during the tests; the
                    # schedules are still created and checked.
                    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        self.procs.append(self._spawn("server", "server", "start", "--host", "127.0.0.1",
                                      "--port", self.api.split(":")[-1].removesuffix("/api")))
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and self.procs[0].poll() is None, self.log("server")
            time.sleep(1)
        for pool in ("cpu", "gpu"):
            self.prefect("work-pool", "create", pool, "--type", "process")
        self.deployed = self.prefect("--no-prompt", "deploy", "--all")
        for pool in ("cpu", "gpu"):
            self.procs.append(self._spawn(f"worker-{pool}", "worker", "start", "--pool", pool))

    def _spawn(self, log: str, *args) -> subprocess.Popen:
        out = open(self.home / f"{log}.log", "w")
        return subprocess.Popen([BIN / "prefect", *args], env=self.env, cwd=ROOT, stdout=out,
                                stderr=out)

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text()[-3000:]

    def prefect(self, *args, timeout=300, check=True) -> str:
        r = subprocess.run([BIN / "prefect", *args], env=self.env, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        out = r.stdout[-3000:] + r.stderr[-3000:]
        assert r.returncode == 0 or not check, out + self.log("worker-cpu") + self.log("worker-gpu")
        return r.stdout + r.stderr

    def call(self, method: str, path: str, **kwargs):
        """The API's answer as JSON. Retried while the server answers 503, as Prefect's own
        client does: SQLite is busy while two workers and a flow run write to it."""
        for _ in range(30):
            r = httpx.request(method, f"{self.api}/{path}", timeout=30, **kwargs)
            if r.status_code != 503:
                break
            time.sleep(1)
        r.raise_for_status()
        return r.json() if r.content else None

    def get(self, path: str):
        return self.call("GET", path)

    def flow_runs(self, deployment: str, run_dir: Path) -> list[dict]:
        """The flow runs of a deployment on `run_dir`, oldest first."""
        dep = self.get(f"deployments/name/{deployment}")
        runs = self.call("POST", "flow_runs/filter", json={
            "deployments": {"id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"})
        return [r for r in runs if r["parameters"].get("run_dir") == str(run_dir)]

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


class KeyedTeacher:
    """A teacher behind an API key, as DeepSeek's: forwards to `target` only requests with
    `Authorization: Bearer <key>`, answers 401 to others; keeps every request's body and
    Authorization header."""

    def __init__(self, target: str, key: str):
        from fastapi import Request
        from fastapi.responses import JSONResponse
        from standins import RecordingProxy

        self.proxy = RecordingProxy(target)
        self.authorizations: list[str | None] = []

        @self.proxy.app.middleware("http")
        async def check_key(request: Request, call_next):
            self.authorizations.append(request.headers.get("authorization"))
            if request.headers.get("authorization") != f"Bearer {key}":
                return JSONResponse({"error": {"message": "Authentication Fails"}}, 401)
            return await call_next(request)

    def __enter__(self):
        self.proxy.__enter__()
        self.url = self.proxy.url
        return self

    def __exit__(self, *exc):
        self.proxy.__exit__(*exc)


@pytest.mark.slow
def test_a_deployment_run_reaches_a_teacher_with_a_key_from_its_job_variables(prefect_server,
                                                                               tmp_path):
    """The documented way to point `distill/r1-to-7b` at a teacher API: overrides as a CLI
    parameter, the key from a Secret block in the deployment's job_variables env, resolved by
    the worker when the run starts. The recipe's prompts are swapped for toy ones and its
    teacher for the toy teacher behind a key; `stages` keeps it to prompts, generate and train,
    and train, sent to the gpu pool where the kept set does not exist yet, fails the run with
    its message after one retry."""
    s = prefect_server
    key = f"sk-{uuid.uuid4().hex}"
    secret = ("import sys; from prefect.blocks.system import Secret; "
              "Secret(value=sys.argv[1]).save('teacher-api-key')")
    r = subprocess.run([BIN / "python", "-c", secret, key], env=s.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    deployment = s.get("deployments/name/distill/r1-to-7b")
    s.call("PATCH", f"deployments/{deployment['id']}", json={"job_variables": {
        "env": {"TEACHER_API_KEY": "{{ prefect.blocks.secret.teacher-api-key }}"}}})
    assert "TEACHER_API_KEY" not in os.environ  # the workers' own environment lacks it

    run_dir = tmp_path / "run"
    with serve_local("toy:teacher") as (teacher_url, _), \
            KeyedTeacher(teacher_url.removesuffix("/v1"), key) as teacher:
        overrides = [
            "prompts.sources=[{name: toy_arith, kind: toy, family: arith, "
            "category: reasoning, count: 12}]",
            "teacher.model=toy:teacher", f"teacher.base_url={teacher.url}/v1",
            "teacher.api_key_env=TEACHER_API_KEY", "generate.max_n_per_request=1",
            "generate.max_tokens=120"]
        out = s.prefect("deployment", "run", "distill/r1-to-7b", "--watch",
                        "--param", f"run_dir={run_dir}",
                        "--param", f"overrides={json.dumps(overrides)}",
                        "--param", 'stages=["prompts", "generate", "train"]',
                        timeout=600, check=False)
    assert "Flow run finished in state 'Failed'" in out, out + s.log("worker-cpu")

    # 12 prompts x the recipe's 4 samples, one sample per request, each with the key.
    generated = json.loads((run_dir / "generate" / "_SUCCESS").read_text())
    assert generated["records"] == 48, generated
    assert len(teacher.proxy.requests) == 48
    assert all(r.get("n", 1) == 1 for r in teacher.proxy.requests)
    assert teacher.authorizations == [f"Bearer {key}"] * 48

    # The key is neither a parameter of the run nor stored with the deployment.
    [run] = s.flow_runs("distill/r1-to-7b", run_dir)
    assert key not in json.dumps(run)
    assert key not in json.dumps(s.get(f"deployments/{deployment['id']}"))
    assert run["work_pool_name"] == "cpu" and run["state"]["type"] == "FAILED"

    # train ran on the gpu pool, twice (the task's retry), and its message failed the run.
    trains = s.flow_runs(GPU, run_dir)
    assert [(t["parameters"]["stage"], t["work_pool_name"], t["state"]["type"])
            for t in trains] == [("train", "gpu", "FAILED")] * 2
    assert "run the filter stage first" in trains[0]["state"]["message"]
    assert "stage train: flow run 'r1-to-7b-train' of distill-stage/gpu ended Failed" in \
        run["state"]["message"] and "run the filter stage first" in run["state"]["message"]


@pytest.mark.slow
def test_deployment_then_refresh_send_the_teacher_only_new_prompts(prefect_server, tmp_path):
    from standins import RecordingProxy

    s = prefect_server
    for name in RECIPES:
        assert f"distill/{name}" in s.deployed and f"refresh/{name}" in s.deployed, s.deployed
    assert GPU in s.deployed
    refresh = s.get("deployments/name/refresh/r1-to-7b")
    assert [x["schedule"]["cron"] for x in refresh["schedules"]] == ["0 3 * * 1"]
    assert refresh["schedules"][0]["active"] is True
    assert s.get("deployments/name/distill/r1-to-7b")["schedules"] == []
    assert s.get(f"deployments/name/{GPU}")["work_pool_name"] == "gpu"

    run_dir = tmp_path / "run"
    with serve_local("toy:teacher") as (teacher_url, _), \
            RecordingProxy(teacher_url.removesuffix("/v1")) as proxy:
        teacher = [f"teacher.base_url={proxy.url}/v1"]

        def deployment(name, overrides):
            params = json.dumps({"run_dir": str(run_dir), "overrides": overrides,
                                 "gpu_deployment": GPU})
            out = s.prefect("deployment", "run", name, "--params", params, "--watch",
                            timeout=1200)
            assert "Completed" in out, out + s.log("worker-cpu")

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

        # train and evaluate ran as flow runs on the gpu pool; the flow run, and with it the
        # other stages' tasks, on the cpu pool.
        [run] = s.flow_runs("distill/smoke", run_dir)
        assert run["work_pool_name"] == "cpu"
        tasks = s.call("POST", "task_runs/filter", json={
            "flow_runs": {"id": {"any_": [run["id"]]}}})
        assert {"prompts", "generate", "filter", "train", "quantize", "evaluate", "publish"} <= \
            {t["name"].rsplit("-", 1)[0] for t in tasks}
        assert [(r["parameters"]["stage"], r["work_pool_name"], r["state"]["type"])
                for r in s.flow_runs(GPU, run_dir)] == \
            [("train", "gpu", "COMPLETED"), ("evaluate", "gpu", "COMPLETED")]

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
        assert summary["stages"] == ["train", "quantize", "evaluate", "publish"]
        trained_after = json.loads((run_dir / "train" / "_SUCCESS").read_text())
        assert trained_after["records"] > trained_before["records"]
        assert trained_after["config_hash"] != trained_before["config_hash"]
        assert [(r["parameters"]["stage"], r["work_pool_name"])
                for r in s.flow_runs(GPU, run_dir)][2:] == [("train", "gpu"), ("evaluate", "gpu")]

        artifacts = s.call("POST", "artifacts/filter", json={})
        keys = {a["key"] for a in artifacts}
        assert {"smoke-filter-report", "smoke-leaderboard", "smoke-leaderboard-table",
                "smoke-refresh"} <= keys, keys
        table = next(a for a in artifacts if a["key"] == "smoke-leaderboard-table")
        assert table["type"] == "table"


@pytest.mark.slow
def test_a_sweep_deployment_scores_every_variant_maps_them_and_a_rerun_trains_nothing(
        prefect_server, tmp_path):
    """`distill-sweep/smoke` over two data sizes, two variants at once: one prompts / generate /
    filter for both, each variant trained and scored, the map's rows equal to the variants'
    scores.json, the teacher asked each prompt and each benchmark question once over the two
    variants; the same deployment run again trains nothing and asks the teacher nothing."""
    from standins import RecordingProxy

    s = prefect_server
    assert "distill-sweep/smoke" in s.deployed
    sweep_dir = tmp_path / "sweep"
    with serve_local("toy:teacher") as (teacher_url, _), \
            RecordingProxy(teacher_url.removesuffix("/v1")) as proxy:
        params = json.dumps({"run_dir": str(sweep_dir), "over": ["train.max_examples=30,60"],
                             "overrides": FIRST + SMALL + [f"teacher.base_url={proxy.url}/v1",
                                                           "sweep.concurrency=2",
                                                           "quantize.enabled=false"]})

        def sweep():
            out = s.prefect("deployment", "run", "distill-sweep/smoke", "--params", params,
                            "--watch", timeout=1500)
            assert "Completed" in out, out + s.log("worker-cpu")

        sweep()
        plan = json.loads((sweep_dir / "sweep.json").read_text())
        runs = {v["name"]: sweep_dir / v["run_dir"] for v in plan["variants"]}
        assert list(runs) == ["train.max_examples=30", "train.max_examples=60"]
        lead, other = runs.values()
        assert (other / "generate").resolve() == (lead / "generate").resolve()
        for name, run_dir in runs.items():
            assert json.loads((run_dir / "train" / "_SUCCESS").read_text())["records"] == \
                int(name.split("=")[1])
        _assert_map_matches_scores(sweep_dir, runs)
        sent = _user_messages(proxy.requests)
        assert len(sent) == len(set(sent)), "the teacher was asked something twice"
        trained = {n: (r / "train" / "_SUCCESS").stat().st_mtime_ns for n, r in runs.items()}

        sweep()
        assert {n: (r / "train" / "_SUCCESS").stat().st_mtime_ns for n, r in runs.items()} == trained
        assert _user_messages(proxy.requests) == sent
        for run_dir in runs.values():
            log = (sweep_dir / "logs" / f"{run_dir.name}.train.log").read_text()
            assert log.count("nothing to do") == 1, log[-2000:]
    keys = {a["key"] for a in s.call("POST", "artifacts/filter", json={})}
    assert "smoke-sweep-map" in keys


def _assert_map_matches_scores(sweep_dir: Path, runs: dict[str, Path]) -> None:
    rows = json.loads((sweep_dir / "report" / "map.json").read_text())["rows"]
    assert rows
    for name, run_dir in runs.items():
        scores = {(r["benchmark"], r["category"]): r for r in
                  json.loads((run_dir / "eval" / "scores.json").read_text())
                  if r["role"] == "student" and r["metric"] == "pass@1"}
        mine = [r for r in rows if r["variant"] == name]
        assert {(r["benchmark"], r["category"]) for r in mine} == set(scores)
        for r in mine:
            want = scores[(r["benchmark"], r["category"])]
            assert r["score"] == pytest.approx(want["score"])
            assert r["retention"] == (None if want["retention"] is None
                                      else pytest.approx(want["retention"]))


@pytest.mark.slow
def test_a_gpu_deployment_that_does_not_run_the_stage_flow_is_bad_input(prefect_server):
    """Checked by the flows before their first stage, so a typo does not surface at train,
    after the teacher was paid for."""
    script = """
import sys
from distill.errors import InputError
from flows.distill_flow import check_stage_deployment
check_stage_deployment("distill-stage/gpu")
for name in sys.argv[1:]:
    try:
        check_stage_deployment(name)
    except InputError as e:
        print(e)
"""
    r = subprocess.run([BIN / "python", "-c", script, "distill-stage/gpus", "distill/smoke",
                        "gpu"], env=prefect_server.env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == [
        "gpu_deployment: no deployment 'distill-stage/gpus' (flow/deployment, e.g. "
        "distill-stage/gpu; see prefect.yaml)",
        "gpu_deployment: 'distill/smoke' runs the flow 'distill', not 'distill-stage'",
        "gpu_deployment: no deployment 'gpu' (flow/deployment, e.g. distill-stage/gpu; see "
        "prefect.yaml)"]


def test_a_stage_that_failed_on_bad_input_is_not_retried():
    """Bad input fails the same way every time: the stage task stops at once; other failures
    (a server, a lost worker) are retried, and resume from the records."""
    from prefect.states import Failed

    from distill.errors import InputError
    from flows.distill_flow import retry_unless_bad_input, stage

    assert retry_unless_bad_input(None, None, Failed(data=InputError("bad", key="train.student"))) is False
    assert retry_unless_bad_input(None, None, Failed(data=RuntimeError("server died"))) is True
    assert stage.retry_condition_fn is retry_unless_bad_input
