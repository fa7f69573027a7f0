"""Teacher-generation client throughput and fault tolerance, side by side with
bespokelabs-curator and distilabel, against the stand-in OpenAI-compatible server
(`tests/teacher_standin.py`, a separate process) with a fixed latency L.

Part 1, throughput: N prompts, at most C requests in flight. Completed requests/s for each
client against the Little's-law bound C / L (a client can never beat it), as the median of
`--repeats` runs, the clients taking turns so that the machine's load falls on all of them.

Part 2, faults: the stand-in answers a fraction (default 30%) of requests with 429 (with
Retry-After), 500, a hang past the client's timeout, a dropped connection or a torn JSON body.
For each client: prompts completed, good answers the server sent for prompts that already had
one (duplicates), and the wasted-request ratio (requests that gave no stored answer / all
requests; the injected fault rate is its floor).

Part 3, rate limit: the stand-in accepts R requests a second (`--limit-per-s`) and answers the
rest 429 with the Retry-After that frees a slot, as a rate-limited API does. Wall time against
the floor N / R, and how many requests were refused.

Each client runs in its own environment, as its users run it (bench/_generate_clients.py):

    python3 -m venv /work/bench-envs/curator && /work/bench-envs/curator/bin/pip install bespokelabs-curator==0.1.31
    python3 -m venv /work/bench-envs/distilabel && /work/bench-envs/distilabel/bin/pip install "distilabel[openai]==1.5.3" requests
    PYTHONPATH=. .venv/bin/python bench/generate.py [--latency 0.5 --concurrency 64 --requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENVS = Path(os.environ.get("BENCH_ENVS", "/work/bench-envs"))


def python_for(client: str) -> str | None:
    if client == "distill":
        return sys.executable
    exe = ENVS / client / "bin" / "python"
    return str(exe) if exe.exists() else None


class StandIn:
    """The stand-in server in its own process, started fresh for each run."""

    def __init__(self, *args: str):
        from distill.serving.launcher import free_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.teacher_standin", "--port", str(self.port),
                                      *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the stand-in server did not start")

    def stats(self) -> dict:
        return httpx.get(self.url.removesuffix("/v1") + "/stats", timeout=30).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_client(client: str, url: str, n: int, c: int, timeout: float, retries: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{client}-") as work:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DISTILABEL_LOG_LEVEL": "WARNING"}
        done = subprocess.run([python_for(client), str(HERE / "_generate_clients.py"), client, "--url", url,
                               "--n", str(n), "--c", str(c), "--timeout", str(timeout),
                               "--retries", str(retries), "--workdir", work],
                              capture_output=True, text=True, env=env, timeout=3600)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = "\n".join(done.stderr.splitlines()[-5:])
            return {"client": client, "error": f"exit {done.returncode}: {tail}"}
        return json.loads(lines[-1])


def throughput(clients: list[str], a) -> None:
    bound = a.concurrency / a.latency
    print(f"\n## Throughput: {a.requests} requests, C = {a.concurrency} in flight, L = {a.latency:g} s "
          f"(bound C/L = {bound:.1f} req/s), median of {a.repeats}\n")
    rates: dict[str, list[float]] = {c: [] for c in clients}
    cpu: dict[str, list[float]] = {c: [] for c in clients}
    in_flight: dict[str, int] = {c: 0 for c in clients}
    for _ in range(a.repeats):
        for client in clients:
            server = StandIn("--latency", str(a.latency))
            try:
                r = run_client(client, server.url, a.requests, a.concurrency, 60.0, 3)
                in_flight[client] = max(in_flight[client], server.stats()["max_in_flight"])
            finally:
                server.stop()
            if "error" in r or r["completed"] != a.requests:
                print(f"  {client}: {r.get('error') or r}", file=sys.stderr)
                continue
            rates[client].append(r["completed"] / r["wall_s"])
            cpu[client].append(1000 * r["cpu_s"] / r["completed"])
    med = {c: statistics.median(v) for c, v in rates.items() if v}
    print("| client | req/s (median) | runs | vs C/L | distill vs it | most in flight | client CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    for c in clients:
        if c not in med:
            print(f"| {c} | failed | 0 | - | - | - | - |")
            continue
        vs = f"{med['distill'] / med[c]:.2f}x" if "distill" in med else "-"
        print(f"| {c} | {med[c]:.1f} | {len(rates[c])} | {med[c] / bound:.2f} | {vs} | {in_flight[c]} | "
              f"{statistics.median(cpu[c]):.2f} |")


def faults(clients: list[str], a) -> None:
    n = a.fault_requests
    print(f"\n## Faults: {n} prompts, each attempt fails with probability {a.fault_rate:.0%} (429 with Retry-After 0.2 s, 500, "
          f"hang past the {a.fault_timeout:g} s timeout, dropped connection, torn JSON), "
          f"C = {a.concurrency}, L = {a.fault_latency:g} s\n")
    _refusals(clients, a, n, ["--fault-rate", str(a.fault_rate), "--retry-after", "0.2",
                              "--hang", str(4 * a.fault_timeout), "--seed", "1"], retries=10)


def rate_limit(clients: list[str], a) -> None:
    n, r = a.fault_requests, a.limit_per_s
    print(f"\n## Rate limit: {n} prompts against an API that accepts {r:g} requests a second and "
          f"answers the rest 429 with the Retry-After that frees a slot; C = {a.concurrency}, "
          f"L = {a.fault_latency:g} s (floor: {n / r:.1f} s)\n")
    _refusals(clients, a, n, ["--limit-per-s", str(r)], retries=50)


def _refusals(clients: list[str], a, n: int, server_args: list[str], retries: int) -> None:
    print("| client | prompts completed | requests | refused or failed | duplicate answers | wasted ratio | wall s |")
    print("|---|---|---|---|---|---|---|")
    for client in clients:
        server = StandIn("--latency", str(a.fault_latency), *server_args)
        try:
            r = run_client(client, server.url, n, a.concurrency, a.fault_timeout, retries)
            st = server.stats()
        finally:
            server.stop()
        if "error" in r:
            print(f"| {client} | error: {r['error'][:80]} | | | | | |")
            continue
        reqs = st["requests"]
        injected = reqs - st["outcomes"].get("ok", 0)
        dups = sum(v - 1 for v in st["ok_per_key"].values() if v > 1)
        wasted = (reqs - r["completed"]) / reqs if reqs else 0.0
        print(f"| {client} | {r['completed']}/{n} | {reqs} | {injected} ({injected / reqs:.1%}) | {dups} | "
              f"{wasted:.3f} | {r['wall_s']:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fault-requests", type=int, default=1000)
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--fault-latency", type=float, default=0.1)
    p.add_argument("--fault-timeout", type=float, default=2.0)
    p.add_argument("--clients", default="distill,curator,distilabel")
    p.add_argument("--limit-per-s", type=float, default=100.0, help="the rate limit of part 3")
    p.add_argument("--only", choices=["throughput", "faults", "rate_limit"], default=None)
    a = p.parse_args()
    clients = []
    for c in a.clients.split(","):
        if python_for(c) is None:
            print(f"skipping {c}: no environment at {ENVS / c} (see this script's docstring)", file=sys.stderr)
        else:
            clients.append(c)
    print(f"# bench/generate.py on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if a.only in (None, "throughput"):
        throughput(clients, a)
    if a.only in (None, "faults"):
        faults(clients, a)
    if a.only in (None, "rate_limit"):
        rate_limit(clients, a)


if __name__ == "__main__":
    main()
