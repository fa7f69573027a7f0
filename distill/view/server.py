"""The viewer's HTTP server: the page (page.html, one file with its script and styles, nothing
fetched from elsewhere, so it works offline) and JSON endpoints over each run's index:

    GET /                               the page
    GET /api/runs                       the runs given, in order: [{name, path, traces}]
    GET /api/run/N/summary              facet counts, eval roles and comparisons of run N
    GET /api/run/N/traces?source=...    a page of traces (query.py says which filters)
    GET /api/run/N/trace/ID             one trace, its verdict
    GET /api/run/N/flips?benchmark=...  a page of flipped questions, every role's answer

The standard library's ThreadingHTTPServer is enough for one person's browser on 127.0.0.1:
six GET routes need no framework, and it starts in milliseconds, where an ASGI app under
uvicorn adds an event loop and a second process model for nothing this page uses.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from distill.links import DEFAULT_PORT
from distill.view.index import check_run_dir
from distill.view.query import RunView

log = logging.getLogger("distill.view")


def _page() -> bytes:
    return resources.files("distill.view").joinpath("page.html").read_bytes()


class _Views:
    """The runs, each indexed on first use (a second run's index is built when it is picked)."""

    def __init__(self, runs: Sequence[Path]):
        self.runs = [check_run_dir(Path(r)) for r in runs]
        self._views: dict[int, RunView] = {}
        self._lock = threading.Lock()

    def get(self, n: int) -> RunView:
        with self._lock:
            if n not in self._views:
                self._views[n] = RunView(self.runs[n])
            return self._views[n]


def _route(views: _Views, path: str, q: dict[str, str]) -> Any:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts == ["api", "runs"]:
        return [{"name": r.name, "path": str(r)} for r in views.runs]
    if len(parts) >= 4 and parts[:2] == ["api", "run"] and parts[2].isdigit() \
            and int(parts[2]) < len(views.runs):
        view = views.get(int(parts[2]))
        if parts[3:] == ["summary"]:
            return view.summary()
        if parts[3:] == ["traces"]:
            return view.traces(q)
        if parts[3:] == ["flips"]:
            return view.flips(q)
        if parts[3] == "trace" and len(parts) == 5:
            return view.trace(parts[4])
    return None


def make_server(runs: Sequence[Path], host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: a free one), not yet serving; the first run is
    indexed now, so a broken run fails here rather than in the browser."""
    views = _Views(runs)
    views.get(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("/", "/index.html"):
                return self._send(200, _page(), "text/html; charset=utf-8")
            try:
                answer = _route(views, url.path, dict(parse_qsl(url.query)))
            except ValueError as e:             # a filter that is not a number
                return self._send(400, json.dumps({"error": str(e)}).encode(), "application/json")
            if answer is None:
                return self._send(404, b'{"error": "not found"}', "application/json")
            self._send(200, json.dumps(answer, ensure_ascii=False).encode(), "application/json")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("view: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
