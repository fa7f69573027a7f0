"""HTTP stand-ins for tests, served on 127.0.0.1 from a thread: `HubStandIn`, the few Hugging
Face Hub endpoints a push uses (no machine here reaches the Hub), and `RecordingProxy`, which
forwards to a teacher server and keeps every request body, so a test can say which prompts the
teacher was sent.

HubStandIn: huggingface_hub's own client talks to it unchanged, over HTTP.

Covered, as huggingface_hub 2.4.0 calls them for `create_repo`, `upload_folder` (with
`delete_patterns`) and `hf_hub_download`:

    POST /api/repos/create                                  409 when the repo exists
    POST /api/validate-yaml                                 card metadata, parsed by huggingface_hub
    GET  /api/{models|datasets}/{repo}/tree/{rev}[/{path}]  the file listing (recursive)
    POST /api/{models|datasets}/{repo}/preupload/{rev}      lfs for weights, parquet and large files
    POST /[datasets/]{repo}.git/info/lfs/objects/batch      basic transfer only
    PUT  /lfs-upload/{oid}                                  sha256 and size checked
    POST /api/{models|datasets}/{repo}/commit/{rev}         NDJSON: file, lfsFile, deletedFile, deletedFolder
    HEAD|GET /[datasets/]{repo}/resolve/{rev}/{path}

Writes need `Authorization: Bearer <token>` with the stand-in's token. Not covered: the Xet
upload protocol (tests set HF_HUB_DISABLE_XET, so the client takes the LFS path), multipart LFS,
branches, pull requests, pagination of the tree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".pt", ".gguf", ".arrow")


@dataclass
class Repo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Served:
    """Serves `self.app` for the duration of a with-block; `self.url` is its address."""

    def __enter__(self):
        self._serving = serve_app(self.app)
        self.url = self._serving.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._serving.__exit__(*exc)


class HubStandIn(_Served):
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.app = self._build()
        self.url = ""

    # ---------------------------------------------------------------- helpers
    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    @staticmethod
    def _kind(plural: str) -> str:
        return {"models": "model", "datasets": "dataset"}[plural]

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def _build(self) -> FastAPI:
        app = FastAPI()
        denied = JSONResponse({"error": "Invalid credentials in Authorization header"}, 401)
        missing = JSONResponse({"error": "Repository not found"}, 404,
                               headers={"X-Error-Code": "RepoNotFound"})

        @app.middleware("http")
        async def log(request: Request, call_next):
            self.requests.append((request.method, request.url.path))
            return await call_next(request)

        @app.post("/api/repos/create")
        async def create(request: Request):
            if not self._authorised(request):
                return denied
            body = await request.json()
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            repo_type = body.get("type") or "model"
            key = (repo_type, repo_id)
            prefix = "datasets/" if repo_type == "dataset" else ""
            url = f"{self.url}/{prefix}{repo_id}"
            if key in self.repos:
                return JSONResponse({"error": "You already created this repo", "url": url}, 409)
            private = body.get("visibility", "private" if body.get("private") else "public") == "private"
            self.repos[key] = Repo(repo_type, private)
            return {"url": url, "name": repo_id}

        @app.post("/api/validate-yaml")
        async def validate(request: Request):
            from huggingface_hub import DatasetCard, ModelCard
            body = await request.json()
            cls = DatasetCard if body.get("repoType") == "dataset" else ModelCard
            try:
                card = cls(body["content"])  # parses the YAML, and a model-index into EvalResults
                if cls is ModelCard:
                    card.data.to_dict()
            except Exception as e:
                return JSONResponse({"errors": [{"message": str(e)}]}, 400)
            return {"errors": [], "warnings": []}

        @app.get("/api/{plural}/{ns}/{name}/tree/{rev}")
        @app.get("/api/{plural}/{ns}/{name}/tree/{rev}/{path:path}")
        async def tree(plural: str, ns: str, name: str, rev: str, path: str = ""):
            repo = self._repo(self._kind(plural), f"{ns}/{name}")
            if repo is None:
                return missing
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            return [{"type": "file", "path": p, "size": len(d), "oid": _git_oid(d)}
                    for p, d in sorted(repo.files.items()) if p.startswith(prefix)]

        @app.post("/api/{plural}/{ns}/{name}/preupload/{rev}")
        async def preupload(plural: str, ns: str, name: str, rev: str, request: Request):
            if not self._authorised(request):
                return denied
            repo = self._repo(self._kind(plural), f"{ns}/{name}")
            if repo is None:
                return missing
            files = (await request.json())["files"]
            out = []
            for f in files:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 2**20
                old = repo.files.get(f["path"])
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                            "oid": _git_oid(old) if old is not None and not lfs else None})
            return {"files": out}

        async def lfs_batch(request: Request):
            if not self._authorised(request):
                return denied
            body = await request.json()
            objects = []
            for o in body["objects"]:
                entry = {"oid": o["oid"], "size": o["size"]}
                if o["oid"] not in self.blobs:
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}",
                                                   "header": {}}}
                objects.append(entry)
            return JSONResponse({"transfer": "basic", "objects": objects},
                                media_type="application/vnd.git-lfs+json")

        app.post("/datasets/{ns}/{name}.git/info/lfs/objects/batch")(lfs_batch)
        app.post("/{ns}/{name}.git/info/lfs/objects/batch")(lfs_batch)

        @app.put("/lfs-upload/{oid}")
        async def lfs_upload(oid: str, request: Request):
            data = await request.body()
            if hashlib.sha256(data).hexdigest() != oid:
                return JSONResponse({"error": "sha256 mismatch"}, 400)
            self.blobs[oid] = data
            return Response(status_code=200)

        @app.post("/api/{plural}/{ns}/{name}/commit/{rev}")
        async def commit(plural: str, ns: str, name: str, rev: str, request: Request):
            if not self._authorised(request):
                return denied
            repo_id = f"{ns}/{name}"
            repo = self._repo(self._kind(plural), repo_id)
            if repo is None:
                return missing
            files = dict(repo.files)
            summary = ""
            for line in (await request.body()).decode().splitlines():
                if not line.strip():
                    continue
                op = json.loads(line)
                key, value = op["key"], op["value"]
                if key == "header":
                    summary = value.get("summary", "")
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in self.blobs:
                        return JSONResponse({"error": f"LFS object {value['oid']} missing"}, 422)
                    files[value["path"]] = self.blobs[value["oid"]]
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            repo.files = files
            sha = hashlib.sha1(f"{repo_id}{len(repo.commits)}{summary}".encode()).hexdigest()
            repo.commits.append(summary)
            prefix = "datasets/" if repo.repo_type == "dataset" else ""
            return {"commitOid": sha, "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{sha}",
                    "success": True, "pullRequestUrl": None}

        async def resolve(ns: str, name: str, rev: str, path: str, request: Request,
                          repo_type: str):
            repo = self._repo(repo_type, f"{ns}/{name}")
            if repo is None or path not in repo.files:
                return JSONResponse({"error": "Entry not found"}, 404,
                                    headers={"X-Error-Code": "EntryNotFound"})
            data = repo.files[path]
            headers = {"X-Repo-Commit": hashlib.sha1(str(len(repo.commits)).encode()).hexdigest(),
                       "ETag": f'"{_git_oid(data)}"', "Content-Length": str(len(data))}
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers)
            return Response(content=data, headers=headers)

        for prefix, repo_type in (("/datasets", "dataset"), ("", "model")):
            async def handler(ns: str, name: str, rev: str, path: str, request: Request,
                              _t: str = repo_type):
                return await resolve(ns, name, rev, path, request, _t)
            app.api_route(prefix + "/{ns}/{name}/resolve/{rev}/{path:path}",
                          methods=["GET", "HEAD"])(handler)
        return app


class RecordingProxy(_Served):
    """Forwards every request to `target` (http://host:port) and keeps the JSON body of each
    POST in `requests`, in arrival order."""

    def __init__(self, target: str):
        import httpx
        self.requests: list[dict] = []
        self.app = FastAPI()
        client = httpx.AsyncClient(base_url=target, timeout=httpx.Timeout(1800.0))

        @self.app.api_route("/{path:path}", methods=["GET", "POST"])
        async def forward(path: str, request: Request):
            body = await request.body()
            if request.method == "POST":
                self.requests.append(json.loads(body))
            r = await client.request(request.method, "/" + path, content=body,
                                     headers={"content-type": "application/json"})
            return Response(r.content, status_code=r.status_code,
                            media_type=r.headers.get("content-type"))



@contextmanager
def serve_app(app) -> Iterator[str]:
    """Serves an ASGI app with uvicorn on a free port in a daemon thread; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the stand-in server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
