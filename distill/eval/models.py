"""Who answers in the eval stage: reads the recipe and the train stage's manifest, yields
OpenAI-compatible endpoints for the teacher, the base student and the distilled student.

Every model is reached over the chat-completions API with the same client and the same
sampling. A model is either an endpoint already running (an API teacher such as DeepSeek's,
`teacher.base_url`; students served elsewhere, `eval.base_url`) or a local path / Hub id that
this stage serves for as long as it needs it, with the project's server or with `vllm serve`
(`eval.server`).

Each model also has a `key` that goes into the id of its per-sample records: the same key means
the same weights, so a re-run reuses samples and a different model reuses none. A local
directory is keyed by a fingerprint of its files, so a model re-trained at the same path is a new
model; the distilled student by its train manifest; an API model by its name and revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from distill.config import Recipe
from distill.errors import InputError
from distill.records import Stage, record_id

Endpoint = Callable[[], ContextManager[tuple[str, str, "str | None"]]]  # (base_url, model, key)
# Files above this size are fingerprinted by size and modification time instead of content:
# hashing a 14B checkpoint (28 GB) on every eval would cost minutes.
HASH_LIMIT_BYTES = 256 << 20


@dataclass
class EvalModel:
    role: str          # teacher | base | student
    name: str          # what the leaderboard shows
    key: str           # what identifies its weights in record ids
    endpoint: Endpoint


def fingerprint(path: Path) -> str:
    """A short hash of a model directory: relative names and contents of its files (size and
    mtime for files above HASH_LIMIT_BYTES)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0".encode())
        if st.st_size > HASH_LIMIT_BYTES:
            h.update(str(st.st_mtime_ns).encode())
            continue
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def weights_key(model: str, revision: str | None) -> str:
    """What makes two evaluations of `model` the same model (see the module docstring)."""
    if model.startswith("toy:"):
        from distill.toy.models import model_key
        return f"{model}@{model_key(model.removeprefix('toy:'))}"
    path = Path(model)
    if path.is_dir():
        return f"local@{fingerprint(path)}"
    return f"{model}@{revision or ''}"


@contextlib.contextmanager
def serve_vllm(model: str, *, revision: str | None = None, extra_args: list[str] | None = None,
               startup_timeout_s: float = 1800.0) -> Iterator[tuple[str, str]]:
    """`vllm serve MODEL` on a free local port, stopped on exit; yields (base_url, served name).
    The served name is `model` as given. vLLM is not a dependency: it must be on PATH."""
    import shutil
    import tempfile

    from distill.teacher.local import free_port, launched, resolve

    exe = shutil.which("vllm")
    if exe is None:
        raise InputError("eval.server is vllm but `vllm` is not on PATH (pip install vllm)",
                         key="eval.server")
    port = free_port()
    cmd = [exe, "serve", resolve(model), "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", model]
    if revision:
        cmd += ["--revision", revision]
    cmd += extra_args or []
    fd, log_path = tempfile.mkstemp(prefix=f"distill-vllm-{port}-", suffix=".log")
    os.close(fd)
    # launched(): its own process group (vLLM's engine and workers are its children, all
    # stopped together) and SIGTERM if this process dies.
    with launched(cmd, f"http://127.0.0.1:{port}/health", Path(log_path), startup_timeout_s,
                  what="vllm server", stop_timeout_s=60.0):
        yield f"http://127.0.0.1:{port}/v1", model


def _served(cfg: Recipe, model: str, revision: str | None, base_url: str | None) -> Endpoint:
    @contextlib.contextmanager
    def endpoint() -> Iterator[tuple[str, str, str | None]]:
        if base_url:  # students already served elsewhere (cfg.eval.base_url)
            yield base_url.rstrip("/"), model, None
            return
        if cfg.eval.server == "vllm":
            with serve_vllm(model, revision=revision, extra_args=cfg.eval.server_args) as (url, name):
                yield url, name, None
            return
        from distill.teacher.local import serve_local
        kw = {"extra_args": cfg.eval.server_args} if cfg.eval.server_args else {}
        with serve_local(model, revision=revision, **kw) as (url, name):
            yield url, name, None
    return endpoint


def _teacher(cfg: Recipe) -> Endpoint:
    """The teacher's own endpoint (an API teacher, with its key) unless it is a local model
    that eval.server says to serve with vLLM."""
    from distill.teacher.local import teacher_endpoint

    if cfg.teacher.base_url or cfg.eval.server != "vllm":
        return lambda: teacher_endpoint(cfg.teacher)
    return _served(cfg, cfg.teacher.model, cfg.teacher.revision, None)


def eval_models(cfg: Recipe, run_dir: Path) -> list[EvalModel]:
    """Teacher, base student, distilled student: the three models every benchmark scores."""
    train = Stage(run_dir, "train")
    if not train.is_complete():
        raise InputError("the train stage is not complete: the distilled student does not "
                         "exist yet (run `distill train` first)", file=str(train.path))
    student_path = str(Path(run_dir).resolve() / "train" / "model")
    # A re-trained student lives at the same path: its manifest tells the weights apart. The
    # key leaves the absolute path out, so a moved run directory keeps its records.
    student_key = f"run:train/model@{record_id(train.manifest())}"
    t, s = cfg.teacher, cfg.train
    return [
        EvalModel("teacher", t.model, weights_key(t.model, t.revision), _teacher(cfg)),
        EvalModel("base", s.student, weights_key(s.student, s.revision),
                  _served(cfg, s.student, s.revision, cfg.eval.base_url)),
        EvalModel("student", cfg.publish.hub_repo or f"{cfg.run.name}-distilled", student_key,
                  _served(cfg, student_path, None, cfg.eval.base_url)),
    ]
